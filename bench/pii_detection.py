"""Precision and recall of the PII detectors, per entity; false positives on real logs.

    PYTHONPATH=src python -m bench.pii_detection [--events 3000] [--seed 1]

1. Synthetic: free-text messages - real loghub lines (BGL, HDFS, Thunderbird)
   on which the detectors find nothing, plus a few sentence templates - with
   fake PII of every entity injected at known spans, in the formats seen in
   practice (cards with and without separators, compressed IPv6, IBANs with
   spaces...), and *hard negatives* injected beside them: Luhn-invalid card
   numbers, IBANs with a wrong checksum, never-issued SSNs, out-of-range
   dotted quads, UUIDs, hashes, timestamps. A finding counts as a true
   positive when it overlaps an injected span of its entity type; every other
   finding is a false positive.
2. Real data: every line of the Apache access log and the loghub samples,
   scanned as text. Nothing was injected, so each finding is listed per
   entity; IP addresses there are real addresses (true hits), anything else
   is a false positive unless the shape says otherwise (shapes are printed
   with digits as 9 and letters as a, never the values).
"""

from __future__ import annotations

import argparse
import base64
import random
import string
import time
from collections import Counter
from pathlib import Path

import orjson

from activelabel.governance.pii import BUILTIN_ENTITIES, PiiScanner

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REAL = {
    "apache": DATA / "http_access_log" / "apache_logs.log",
    "bgl": DATA / "loghub" / "BGL" / "BGL_2k.log",
    "hdfs": DATA / "loghub" / "HDFS" / "HDFS_2k.log",
    "thunderbird": DATA / "loghub" / "Thunderbird" / "Thunderbird_2k.log",
}
TEMPLATES = [
    "user {} logged in from the web console",
    "payment declined for customer {} after 3 retries",
    "support ticket opened: please contact {} about the refund",
    "request failed: upstream returned 502 for {}",
    "audit: field value {} written to profile",
]


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _group(number: str, sep: str, sizes: tuple[int, ...]) -> str:
    parts, i = [], 0
    for size in sizes:
        parts.append(number[i : i + size])
        i += size
    return sep.join(p for p in parts if p)


def gen_card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "amex"])
    if kind == "amex":
        number = _luhn_complete(rng.choice(["34", "37"]) + _digits(rng, 12))
        return _group(number, rng.choice(["", " ", "-"]), (4, 6, 5))
    prefix = "4" if kind == "visa" else rng.choice(["51", "52", "53", "54", "55"])
    number = _luhn_complete(prefix + _digits(rng, 15 - len(prefix)))
    return _group(number, rng.choice(["", " ", "-"]), (4, 4, 4, 4))


_IBAN = {"GB": ("ZZZZ", 14), "DE": ("", 18), "FR": ("", 23), "NL": ("ABNA", 10)}


def gen_iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(list(_IBAN))
    bank, n = _IBAN[country]
    bban = bank + _digits(rng, n)
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    if not valid:
        check = (check + rng.randint(1, 96)) % 97 + 2 if check != 2 else 3
        check = min(check, 98)
    code = f"{country}{check:02d}{bban}"
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4)) if rng.random() < 0.5 else code


def gen_email(rng: random.Random) -> str:
    first = rng.choice(["ann", "bob", "chen", "dana", "eli", "fatima", "georg", "hana"])
    last = rng.choice(["smith", "mueller", "ng", "okafor", "rossi", "tanaka"])
    local = rng.choice([f"{first}.{last}", f"{first}_{last}{rng.randint(1, 99)}", f"{first}+{rng.choice(['shop', 'news'])}", f"{first[0]}{last}"])
    domain = rng.choice(["example.com", "mail.example.org", "corp.example.de", "example.co.uk", "example.io"])
    return f"{local}@{domain}"


def gen_phone(rng: random.Random) -> str:
    d = _digits
    return rng.choice([
        f"+1 {rng.randint(201, 989)}-555-{d(rng, 4)}", f"({rng.randint(201, 989)}) 555-{d(rng, 4)}",
        f"{rng.randint(201, 989)}.555.{d(rng, 4)}", f"+44 20 {d(rng, 4)} {d(rng, 4)}", f"+49 30 {d(rng, 6)}",
        f"+33 1 {d(rng, 2)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)}", f"+1{rng.randint(201, 989)}555{d(rng, 4)}",
    ])  # fmt: skip


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return ":".join(groups)
    return ":".join(groups[:3]) + "::" + groups[7]


def gen_ssn(rng: random.Random) -> str:
    return f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def gen_jwt(rng: random.Random) -> str:
    header = _b64(orjson.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}))
    payload = _b64(orjson.dumps({"sub": _digits(rng, 6), "iat": 1700000000 + rng.randint(0, 10**6)}))
    return f"{header}.{payload}.{_b64(rng.randbytes(32))}"


def gen_api_key(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    r = lambda n, chars=alnum: "".join(rng.choice(chars) for _ in range(n))
    return rng.choice([
        "AKIA" + r(16, string.ascii_uppercase + string.digits), "ghp_" + r(36), "sk_live_" + r(24),
        "xoxb-" + _digits(rng, 12) + "-" + r(24), "AIza" + r(35, alnum + "_-"), "api_key=" + r(32),
    ])  # fmt: skip


GENERATORS = {
    "EMAIL_ADDRESS": gen_email, "PHONE_NUMBER": gen_phone, "IP_ADDRESS": gen_ip, "CREDIT_CARD": gen_card,
    "IBAN_CODE": gen_iban, "US_SSN": gen_ssn, "JWT": gen_jwt, "API_KEY": gen_api_key,
}  # fmt: skip


def gen_hard_negative(rng: random.Random) -> str:
    card = _luhn_complete("4" + _digits(rng, 14))
    bad_card = card[:-1] + str((int(card[-1]) + 1) % 10)
    return rng.choice([
        bad_card, gen_iban(rng, valid=False), f"000-{rng.randint(10, 99)}-{_digits(rng, 4)}",
        f"666-{rng.randint(10, 99)}-{_digits(rng, 4)}", f"10.{rng.randint(256, 999)}.3.4",
        str(__import__("uuid").UUID(int=rng.getrandbits(128))), rng.randbytes(20).hex(),
        f"2015-05-{rng.randint(10, 28)} 10:{rng.randint(10, 59)}:{rng.randint(10, 59)}", f"took {rng.randint(100, 99999)} ms",
        f"build 2.{rng.randint(0, 20)}.{rng.randint(0, 300)}", f"order #{_digits(rng, 12)}",
    ])  # fmt: skip


def carriers(scanner: PiiScanner, limit: int = 1500) -> list[str]:
    out = []
    for name in ("bgl", "hdfs", "thunderbird"):
        path = REAL[name]
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[:limit]:
            if line and not scanner.analyze(line):
                out.append(line)
    return out


def synthetic(n: int, seed: int) -> tuple[dict[str, Counter[str]], int, int]:
    rng = random.Random(seed)
    scanner = PiiScanner()
    bases = carriers(scanner)
    counts = {e: Counter() for e in BUILTIN_ENTITIES}
    negatives = 0
    for i in range(n):
        entity = BUILTIN_ENTITIES[i % len(BUILTIN_ENTITIES)]
        value = GENERATORS[entity](rng)
        base = rng.choice(bases) if bases and rng.random() < 0.7 else rng.choice(TEMPLATES).format("X")
        base = base.replace("X", "", 1) if "X" in base else base
        negative = gen_hard_negative(rng) if rng.random() < 0.5 else ""
        negatives += bool(negative)
        prefix = f"{base} | value: "
        text = prefix + value + (f" ref {negative}" if negative else "") + " end"
        span = (len(prefix), len(prefix) + len(value))
        found = scanner.analyze(text)
        hit = any(r.entity_type == entity and r.start < span[1] and r.end > span[0] for r in found)
        counts[entity]["tp" if hit else "fn"] += 1
        for r in found:
            if not (r.entity_type == entity and r.start < span[1] and r.end > span[0]):
                counts[r.entity_type]["fp"] += 1
    return counts, n, negatives


def _shape(text: str) -> str:
    return "".join("9" if c.isdigit() else "a" if c.isalpha() else c for c in text)


def real_data() -> list[tuple[str, int, Counter[str], dict[str, Counter[str]], float]]:
    rows = []
    for name, path in REAL.items():
        if not path.exists():
            continue
        scanner = PiiScanner()
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        hits: Counter[str] = Counter()
        shapes: dict[str, Counter[str]] = {}
        start = time.perf_counter()
        for line in lines:
            for r in scanner.analyze(line):
                hits[r.entity_type] += 1
                shapes.setdefault(r.entity_type, Counter())[_shape(line[r.start : r.end])[:40]] += 1
        rows.append((name, len(lines), hits, shapes, len(lines) / (time.perf_counter() - start)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    counts, n, negatives = synthetic(args.events, args.seed)
    print(f"synthetic: {n} events, one injected entity each, {negatives} with a hard negative beside it")
    print(f"{'entity':<15}{'injected':>9}{'found':>7}{'false+':>8}{'precision':>11}{'recall':>8}")
    for entity in BUILTIN_ENTITIES:
        c = counts[entity]
        tp, fn, fp = c["tp"], c["fn"], c["fp"]
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        print(f"{entity:<15}{tp + fn:>9}{tp:>7}{fp:>8}{precision:>11.3f}{recall:>8.3f}")
    print()
    print("real data (nothing injected): findings per entity; shapes with digits as 9, letters as a")
    for name, lines, hits, shapes, rate in real_data():
        total = ", ".join(f"{e} {hits[e]}" for e in BUILTIN_ENTITIES if hits[e]) or "none"
        print(f"{name}: {lines} lines, {rate:,.0f} lines/s: {total}")
        for entity, shape_counts in shapes.items():
            top = "; ".join(f"{s} x{k}" for s, k in shape_counts.most_common(3))
            print(f"    {entity}: {top}")


if __name__ == "__main__":
    main()
