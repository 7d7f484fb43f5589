"""Novelty as a label source (`type: novelty` enricher), open enum label sets, and `label`'s model summary."""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.engine import Labeler
from activelabel.errors import FeedbackError, PolicyError
from activelabel.policy import load_policy
from activelabel.policy import load_policy_text as loads_policy
from activelabel.quality.novelty import NoveltyIndex
from activelabel.quality.review_server import ReviewPage
from activelabel.quality.store import DecisionStore

REPO = Path(__file__).resolve().parents[1]
HDFS = REPO.parent / "shared" / "data" / "loghub" / "HDFS" / "HDFS_2k.parsed.jsonl"
HDFS_FIELDS = ("line_no", "date", "time", "pid", "level", "component", "content")
NEW_TEMPLATE = "rdma: link retrain on port {n} lane 2 after {n}7 CRC errors, queue pair 0x{n}f1 reset"
_register()
runner = CliRunner()


def _hdfs(n: int) -> list[dict]:
    return [orjson.loads(x) for x in HDFS.read_bytes().splitlines()[:n]]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


NOVELTY_POLICY = """apiVersion: activelabel/v1
kind: Policy
labels:
  template: {type: string}
enrichers:
  - {name: novelty, type: novelty, key: event.content, file: index.novelty.json}
rules:
  - {id: novel, label: template, value: __novel__, when: novelty.novel, confidence: 0.5}
  - {id: received, label: template, value: E11, when: 'event.content.startsWith("Received block")'}
"""


def test_a_novelty_enricher_lets_a_rule_route_lines_of_an_unseen_template_at_label_time(tmp_path):
    """`activelabel label` with a `type: novelty` enricher labels a never-trained template `__novel__` and leaves known ones alone."""
    rows = _hdfs(300)
    trained = [r for r in rows if r["event_id"] in ("E10", "E6", "E11")]
    NoveltyIndex.build(({"msg": r["content"]} for r in trained), ["msg"]).save(tmp_path / "index.novelty.json")
    (tmp_path / "policy.yaml").write_text(NOVELTY_POLICY)
    events = [{k: r[k] for k in HDFS_FIELDS} for r in trained[:20]]
    events += [{"line_no": 9000 + n, "content": NEW_TEMPLATE.format(n=n)} for n in range(5)]
    data = _jsonl(tmp_path / "events.jsonl", events)
    res = runner.invoke(app, ["label", "--policy", str(tmp_path / "policy.yaml"), str(data), "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    out = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    novel = [o["line_no"] for o in out if o["labels"].get("template") == "__novel__"]
    assert novel == [9000 + n for n in range(5)]
    received = [o for o in out if o["content"].startswith("Received block")]
    assert received and all(o["labels"]["template"] == "E11" for o in received)
    assert all("template" not in o["labels"] for o in out if o["line_no"] < 9000 and o not in received)
    labeler = Labeler.from_file(tmp_path / "policy.yaml")
    assert labeler.label({"content": NEW_TEMPLATE.format(n=7)}).sources["template"] == "rule:novel"


def test_the_novelty_index_is_part_of_the_policy_version_and_a_missing_one_says_what_to_do(tmp_path):
    """Retraining changes the index and so the policy version; a missing index is a policy error naming the loop."""
    (tmp_path / "policy.yaml").write_text(NOVELTY_POLICY)
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / "policy.yaml")
    assert "novelty index" in str(exc.value) and "activelabel loop" in str(exc.value)
    NoveltyIndex([], [], 0.4).save(tmp_path / "index.novelty.json")
    empty = load_policy(tmp_path / "policy.yaml")
    assert Labeler(empty).label({"content": "anything at all"}).labels["template"] == "__novel__"
    NoveltyIndex.build([{"msg": "Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"}], ["msg"]).save(
        tmp_path / "index.novelty.json")
    built = load_policy(tmp_path / "policy.yaml")
    assert built.version != empty.version
    assert tmp_path.joinpath("index.novelty.json").resolve() in built.dependencies


def test_the_loop_keeps_novelty_as_a_source_current_and_never_trains_on_its_value(tmp_path):
    """After `activelabel loop`, the policy routes a new template to `__novel__` at label time, labels known ones, and
    `label`'s summary shows the model's abstentions and timeouts."""
    rows = _hdfs(400)
    data = _jsonl(tmp_path / "data.jsonl", [{k: r[k] for k in HDFS_FIELDS} for r in rows])
    answers = _jsonl(tmp_path / "truth.jsonl", [{"id": str(r["line_no"]), "label": "template", "value": r["event_id"]}
                                                for r in rows])
    policy = tmp_path / "policy.yaml"
    policy.write_text(NOVELTY_POLICY.replace("  - {name: novelty, type: novelty, key: event.content, file: index.novelty.json}\n", "")
                      .replace("enrichers:\n", "").replace("  - {id: received", "  # - {id: received"))
    res = runner.invoke(app, ["loop", "--policy", str(policy), "--data", str(data), "--label", "template",
                              "--id-field", "line_no", "--answers", str(answers), "--rounds", "2", "--budget", "15",
                              "--feature", "msg=event.content", "--dedup-field", "content", "--json",
                              "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rounds = [orjson.loads(x) for x in res.stdout.splitlines()][:-1]
    # Before any model every line is novel (nothing has been learned), and the rule flags it.
    assert rounds[0]["novel_share"] == 1.0
    assert rounds[-1]["novel_share"] < 0.2
    owned = (tmp_path / "policy.loop-models.yaml").read_text()
    assert "type: novelty" in owned and "policy.loop-novelty.json" in owned
    model = next(m for m in load_policy(policy).models if m.label == "template")
    card = orjson.loads(model.path.with_name(model.path.name.replace(".joblib", ".card.json")).read_bytes())
    assert "__novel__" not in card["classes"]
    seen = [{k: r[k] for k in HDFS_FIELDS} for r in rows if r["event_id"] in card["classes"]][:30]
    events = seen + [{"line_no": 9000 + n, "content": NEW_TEMPLATE.format(n=n)} for n in range(5)]
    res = runner.invoke(app, ["label", "--policy", str(policy), str(_jsonl(tmp_path / "e.jsonl", events)),
                              "-o", str(tmp_path / "labeled.jsonl")])
    assert res.exit_code == 0, res.output
    out = [orjson.loads(x) for x in (tmp_path / "labeled.jsonl").read_bytes().splitlines()]
    truth = {r["line_no"]: r["event_id"] for r in rows}
    assert all(o["labels"]["template"] == "__novel__" for o in out if o["line_no"] >= 9000)
    known = [o for o in out if o["line_no"] < 9000]
    assert sum(o["labels"].get("template") == truth[o["line_no"]] for o in known) >= 0.9 * len(known)
    summary = " ".join(res.stderr.split())
    assert f"model {model.name}:" in summary and "below min_confidence" in summary and "timeouts" in summary


OPEN_ENUM = """apiVersion: activelabel/v1
kind: Policy
labels:
  category:
    type: enum
    values: [APPREAD, KERNDTLB]
    open: true
    max_cardinality: 4
rules:
  - {id: tlb, label: category, value: KERNDTLB, when: 'event.content.contains("TLB")'}
  - {id: new, label: category, value: LUSTRE, when: 'event.content.contains("Lustre")'}
  - {id: computed, label: category, value_expr: 'event.kind', when: 'has(event.kind)'}
"""


def test_an_open_enum_loads_takes_values_beyond_its_list_and_is_part_of_the_version():
    """`open: true` lets rules and computed values use new names, while a closed enum still refuses them."""
    policy = loads_policy(OPEN_ENUM)
    assert policy.labels["category"].open and policy.canonical()["labels"][0]["open"] is True
    labeler = Labeler(policy)
    assert labeler.label({"content": "Lustre mount FAILED"}).labels["category"] == "LUSTRE"
    assert labeler.label({"content": "x", "kind": "APPTO"}).labels["category"] == "APPTO"
    with pytest.raises(PolicyError, match="LUSTRE"):
        loads_policy(OPEN_ENUM.replace("    open: true\n", ""))
    with pytest.raises(PolicyError, match="only for enum labels"):
        loads_policy(OPEN_ENUM.replace("type: enum", "type: string").replace("    values: [APPREAD, KERNDTLB]\n", ""))
    no_values = loads_policy(OPEN_ENUM.replace("    values: [APPREAD, KERNDTLB]\n", "").replace("KERNDTLB, when", "x, when"))
    assert no_values.labels["category"].values is None
    known_only = OPEN_ENUM.split("  - {id: new")[0]
    assert loads_policy(known_only).version != loads_policy(known_only.replace("open: true", "open: false")).version


def test_open_enum_feedback_learns_new_values_with_who_and_when_up_to_max_cardinality(tmp_path):
    """New values from people are recorded with who and when; past max_cardinality the next new value is refused with why."""
    policy = loads_policy(OPEN_ENUM)
    store = DecisionStore(tmp_path / "s.db", policy=policy)
    labeler = Labeler(policy)
    for i in range(5):
        event = {"id": f"e{i}", "content": "something new"}
        store.record(f"e{i}", event, labeler.label(event))
    store.add_ground_truth("e0", "category", "APPREAD", who="ana")
    store.add_ground_truth("e1", "category", "APPTO", who="ana")
    store.add_ground_truth("e2", "category", "APPRES", who="bo")
    assert [(v["value"], v["who"]) for v in store.learned_values("category")] == [("APPTO", "ana"), ("APPRES", "bo")]
    assert all(v["ts"] for v in store.learned_values("category"))
    with pytest.raises(FeedbackError, match="max_cardinality"):
        store.add_ground_truth("e3", "category", "APPCHILD", who="bo")
    store.add_ground_truth("e4", "category", "APPTO", who="cy")  # a known value still fits
    assert any("max_cardinality" in r["reason"] for r in store.rejections())
    closed = DecisionStore(tmp_path / "c.db", policy=loads_policy(OPEN_ENUM.replace("    open: true\n", "")
                                                                  .replace("value: LUSTRE", "value: APPREAD")))
    closed.record("e0", {"content": "x"}, labeler.label({"content": "x"}))
    with pytest.raises(FeedbackError, match="outside"):
        closed.add_ground_truth("e0", "category", "APPTO")


def test_review_export_and_the_review_page_offer_a_new_value_for_an_open_enum(tmp_path):
    """The Label Studio config lists the enum's values plus learned ones and a free-text box; the page saves a typed value."""
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(OPEN_ENUM)
    data = _jsonl(tmp_path / "events.jsonl", [{"id": f"e{i}", "content": f"line {i} about something"} for i in range(6)])
    res = runner.invoke(app, ["label", "--policy", str(policy_path), str(data), "--record", str(tmp_path / "s.db"),
                              "--id-field", "id", "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    store = DecisionStore(tmp_path / "s.db", policy=load_policy(policy_path))
    store.add_ground_truth("e0", "category", "APPTO", who="ana")
    res = runner.invoke(app, ["review", "export", "--store", str(tmp_path / "s.db"), "--label", "category", "--budget", "3",
                              "--text-field", "content", "-o", str(tmp_path / "review.tasks.json")])
    assert res.exit_code == 0, res.output
    xml = (tmp_path / "review.tasks.xml").read_text()
    assert [c in xml for c in ('"APPREAD"', '"KERNDTLB"', '"APPTO"', 'name="category__new"')] == [True] * 4
    page = ReviewPage(store, "category", text_field="content", who="bo")
    url = page.start()
    try:
        html = urllib.request.urlopen(url + "/").read().decode()
        assert 'name="new_value"' in html
        rid = html.split('name="id" value="', 1)[1].split('"', 1)[0]
        body = urllib.parse.urlencode({"id": rid, "new_value": "APPCHILD"}).encode()
        urllib.request.urlopen(urllib.request.Request(url + "/answer", data=body, method="POST")).read()
    finally:
        page.stop()
    assert {v["value"]: v["who"] for v in store.learned_values("category")} == {"APPTO": "ana", "APPCHILD": "bo"}
    assert any(g.value == "APPCHILD" and g.who == "bo" for g in store.ground_truth("category"))


THUNDERBIRD = REPO.parent / "shared" / "data" / "loghub" / "Thunderbird" / "Thunderbird_2k.labeled.jsonl"


def test_a_line_of_a_reviewed_template_whose_word_varies_is_not_flagged_novel_at_label_time(tmp_path):
    """Two reviewed lines of one class that differ in one word teach the index that word is a parameter:
    `label` then leaves a third variant alone, while a new template is still `__novel__`."""
    rows = [orjson.loads(x) for x in THUNDERBIRD.read_bytes().splitlines()]
    removing = [r for r in rows if r["content"].startswith("removing ") and len(r["content"].split()) == 2]
    services = sorted({r["content"].split()[1] for r in removing})
    assert len(services) >= 4  # real Thunderbird lines: `removing kshell`, `removing echo`, ...
    trained = [{"msg": f"removing {s}"} for s in services[:2]]
    trained.append({"msg": "session opened for user root by (uid=0)"})
    labels = [removing[0]["event_id"]] * 2 + ["E_session"]
    NoveltyIndex.build(trained, ["msg"], labels=labels).save(tmp_path / "index.novelty.json")
    (tmp_path / "policy.yaml").write_text(NOVELTY_POLICY)
    events = [{"line_no": n, "content": f"removing {s}"} for n, s in enumerate(services[2:])]
    events.append({"line_no": 900, "content": NEW_TEMPLATE.format(n=3)})
    res = runner.invoke(app, ["label", "--policy", str(tmp_path / "policy.yaml"),
                              str(_jsonl(tmp_path / "e.jsonl", events)), "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    out = {o["line_no"]: o["labels"].get("template") for o in map(orjson.loads, (tmp_path / "out.jsonl").read_bytes().splitlines())}
    assert out.pop(900) == "__novel__"
    assert out and all(v != "__novel__" for v in out.values())
    # Without the labels (one template per line, nothing learned) the same variants are novel.
    NoveltyIndex.build(trained, ["msg"]).save(tmp_path / "index.novelty.json")
    assert Labeler.from_file(tmp_path / "policy.yaml").label({"content": f"removing {services[-1]}"}).labels[
        "template"] == "__novel__"


def test_word_parameters_are_learned_only_within_a_class_and_only_where_enough_of_the_line_agrees(tmp_path):
    """Lines of different classes, or of one class sharing too few words, are not merged into one pattern."""
    from activelabel.quality.novelty import learn_patterns, template_tokens

    lines = ["removing kshell", "removing echo", "link up on port", "fan speed is low"]
    toks = [template_tokens(t) for t in lines]
    assert learn_patterns(toks, ["A", "A", "B", "B"]) == [("removing", "<*>")]
    assert learn_patterns(toks[:2], ["A", "B"]) == []  # the same words in two classes: two templates
    assert learn_patterns(toks[2:], ["B", "B"]) == []  # one class, but no position in common
    index = NoveltyIndex.build([{"m": t} for t in lines], ["m"], labels=["A", "A", "B", "B"])
    assert index.score_text("removing telnet") == 0.0
    assert index.is_novel(index.score_text("removing telnet now"))  # another length: not that pattern
    assert NoveltyIndex.load(index.save(tmp_path / "idx.json")).patterns == index.patterns


def test_a_novelty_index_with_malformed_patterns_is_refused_with_what_to_do(tmp_path):
    """`patterns` that are not lists of words make the policy fail to load, naming the file and the fix."""
    (tmp_path / "policy.yaml").write_text(NOVELTY_POLICY)
    (tmp_path / "index.novelty.json").write_bytes(orjson.dumps({"templates": [["a"]], "patterns": [["a", 3]]}))
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / "policy.yaml")
    assert "index.novelty.json" in str(exc.value) and "patterns" in str(exc.value)
    assert "activelabel loop" in str(exc.value)


def test_review_export_ranks_by_the_policys_novelty_enricher_and_says_so_when_it_cannot(tmp_path):
    """`review export --strategy novelty --policy P` sends lines of a never-trained template first; without P it says
    it ranks like uncertainty (and then the unset known-template lines, confidence 0, come first)."""
    rows = _hdfs(300)
    trained = [r for r in rows if r["event_id"] in ("E10", "E6", "E11")]
    NoveltyIndex.build(({"msg": r["content"]} for r in trained), ["msg"]).save(tmp_path / "index.novelty.json")
    policy = tmp_path / "policy.yaml"
    policy.write_text(NOVELTY_POLICY)
    events = [{k: r[k] for k in HDFS_FIELDS} for r in trained[:20]]
    events += [{"line_no": 9000 + n, "content": NEW_TEMPLATE.format(n=n)} for n in range(5)]
    store = tmp_path / "s.db"
    res = runner.invoke(app, ["label", "--policy", str(policy), str(_jsonl(tmp_path / "events.jsonl", events)),
                              "--record", str(store), "--id-field", "line_no", "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    exported = {}
    for with_policy in (True, False):
        tasks = tmp_path / f"tasks-{with_policy}.json"
        res = runner.invoke(app, ["review", "export", "--store", str(store), "--label", "template", "--budget", "3",
                                  "--strategy", "novelty", "--no-dedup", "-o", str(tasks),
                                  *(["--policy", str(policy)] if with_policy else [])])
        assert res.exit_code == 0, res.output
        exported[with_policy] = ([int(t["data"]["activelabel_id"]) for t in orjson.loads(tasks.read_bytes())],
                                 " ".join(res.stderr.split()))
    ids, note = exported[True]  # best first; farthest-first then spends the rest away from that template
    assert ids[0] >= 9000 and sum(i >= 9000 for i in ids) == 1 and "ranks like uncertainty" not in note
    ids, note = exported[False]
    assert all(i < 9000 for i in ids)
    assert "novelty ranks by the policy's `type: novelty` enricher" in note and "without --policy" in note


def test_with_nearest_template_an_unsure_loops_model_labels_lines_of_reviewed_templates_and_novel_ones_stay_novel(tmp_path):
    """`loop --nearest-template` writes `below_confidence: nearest-template`: with the model unsure of every line
    (--min-confidence 0.999) lines of templates it was trained on get their template's class at label time, new
    templates still `__novel__`; with --no-nearest-template the same lines are left unset."""
    rows = _hdfs(400)
    data = _jsonl(tmp_path / "data.jsonl", [{k: r[k] for k in HDFS_FIELDS} for r in rows])
    answers = _jsonl(tmp_path / "truth.jsonl", [{"id": str(r["line_no"]), "label": "template", "value": r["event_id"]}
                                                for r in rows])
    truth = {r["line_no"]: r["event_id"] for r in rows}
    got = {}
    for flag in ("--nearest-template", "--no-nearest-template"):
        run = tmp_path / flag.strip("-")
        run.mkdir()
        policy = run / "policy.yaml"
        policy.write_text(NOVELTY_POLICY.replace("  - {name: novelty, type: novelty, key: event.content, file: index.novelty.json}\n", "")
                          .replace("enrichers:\n", "").replace("  - {id: received", "  # - {id: received"))
        res = runner.invoke(app, ["loop", "--policy", str(policy), "--data", str(data), "--label", "template",
                                  "--id-field", "line_no", "--answers", str(answers), "--rounds", "2", "--budget", "15",
                                  "--feature", "msg=event.content", "--dedup-field", "content", "--min-confidence",
                                  "0.999", flag, "--json", "-o", str(run / "out")])
        assert res.exit_code == 0, res.output
        owned = (run / "policy.loop-models.yaml").read_text()
        assert ("below_confidence: nearest-template" in owned) == (flag == "--nearest-template")
        model = next(m for m in load_policy(policy).models if m.label == "template")
        classes = orjson.loads(model.path.with_name(model.path.name.replace(".joblib", ".card.json")).read_bytes())["classes"]
        known = [{k: r[k] for k in HDFS_FIELDS} for r in rows if r["event_id"] in classes][:40]
        labeler = Labeler.from_file(policy)
        got[flag] = [labeler.label(e).labels.get("template") for e in known]
        assert labeler.label({"content": NEW_TEMPLATE.format(n=3)}).labels["template"] == "__novel__"
        res = runner.invoke(app, ["label", "--policy", str(policy), str(_jsonl(run / "known.jsonl", known)),
                                  "-o", str(run / "labeled.jsonl")])
        assert res.exit_code == 0, res.output
        said = " ".join(res.stderr.split())
        assert ("labeled by their trained template" in said) == (flag == "--nearest-template")
    wanted = [truth[e["line_no"]] for e in known]
    assert sum(g == w for g, w in zip(got["--nearest-template"], wanted, strict=True)) >= 0.9 * len(known)
    assert not [g for g in got["--no-nearest-template"] if g not in (None, "__novel__")]


def test_a_novelty_index_knows_its_templates_classes_and_rules_can_read_the_nearest(tmp_path):
    """The index built with labels answers the class of the most similar trained template (none when two classes tie),
    and the enricher gives rules `nearest`."""
    rows = [{"msg": "Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"},
            {"msg": "PacketResponder 1 for block blk_2 terminating"},
            {"msg": "Deleting block blk_3 file /data/blk_3"}, {"msg": "Deleting block blk_4 file /data/blk_4"}]
    index = NoveltyIndex.build(rows, ["msg"], labels=["E5", "E11", "E21", "E22"])
    from activelabel.quality.novelty import template_tokens

    assert index.nearest(template_tokens("Receiving block blk_9 src: /10.0.0.7:5 dest: /10.0.0.2:50010")) == ("E5", 1.0)
    cls, sim = index.nearest(template_tokens("PacketResponder 3 for block blk_7 terminating now"))
    assert cls == "E11" and 0.6 < sim < 1.0
    assert index.nearest(template_tokens("Deleting block blk_8 file /data/blk_8"))[0] is None  # E21 and E22 alike
    index.save(tmp_path / "index.novelty.json")
    (tmp_path / "policy.yaml").write_text(NOVELTY_POLICY.replace(
        "  - {id: novel,", "  - {id: near, label: template, value_expr: 'novelty.nearest', when: 'novelty.score < 0.2'}\n"
                          "  - {id: novel,"))
    labeler = Labeler.from_file(tmp_path / "policy.yaml")
    assert labeler.label({"content": "PacketResponder 2 for block blk_5 terminating"}).labels["template"] == "E11"
    assert labeler.label({"content": NEW_TEMPLATE.format(n=1)}).labels["template"] == "__novel__"
