"""`activelabel loop`: one command for the whole active loop, scored on a holdout review never touches."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.engine import Labeler
from activelabel.quality.drift import decision_drift, psi
from activelabel.quality.feedback import read_label_studio_export
from activelabel.quality.loop import ensure_include, holdout_ids
from activelabel.quality.novelty import NoveltyIndex
from activelabel.quality.review import label_studio_config, template_key
from activelabel.quality.store import DecisionStore

REPO = Path(__file__).resolve().parents[1]
LOGHUB = REPO.parent / "shared" / "data" / "loghub"
BGL_FIELDS = ("line_no", "timestamp", "node", "type", "component", "level", "content")
_register()
runner = CliRunner()


def _bgl(tmp_path: Path, n: int = 600) -> tuple[Path, Path, Path]:
    """The first n BGL lines without their label, the truth file, and a copy of the rules-only policy."""
    rows = [orjson.loads(x) for x in (LOGHUB / "BGL" / "BGL_2k.labeled.jsonl").read_bytes().splitlines()[:n]]
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(orjson.dumps({k: r[k] for k in BGL_FIELDS}) + b"\n" for r in rows))
    answers = tmp_path / "truth.jsonl"
    answers.write_bytes(b"".join(orjson.dumps({"id": str(r["line_no"]), "label": "alert_category",
                                               "value": r["alert_category"]}) + b"\n" for r in rows))
    policy = tmp_path / "policy.yaml"
    policy.write_text((REPO / "examples" / "bgl" / "policy.yaml").read_text())
    return data, answers, policy


def _loop_args(data: Path, answers: Path | None, policy: Path, out: Path, *extra: str, rounds: int = 2) -> list[str]:
    args = ["loop", "--policy", str(policy), "--data", str(data), "--label", "alert_category", "--id-field", "line_no",
            "--rounds", str(rounds), "--budget", "20", "--seed", "3", "--dedup-field", "content", "-o", str(out),
            "--feature", "msg=event.content", "--feature", "level=event.level", *extra]
    return args + (["--answers", str(answers)] if answers else [])


def test_loop_with_answers_runs_rounds_scores_on_the_holdout_and_leaves_a_policy_with_the_model(tmp_path):
    """Two rounds: review never picks a held-out line, the policy keeps its text and includes the new model."""
    data, answers, policy = _bgl(tmp_path)
    original = policy.read_text()
    res = runner.invoke(app, [*_loop_args(data, answers, policy, tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    lines = [orjson.loads(x) for x in res.stdout.splitlines()]
    rounds, summary = lines[:-1], lines[-1]["summary"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and [r["reviewed"] for r in rounds] == [0, 20, 40]
    assert all(r["holdout"]["size"] == rounds[0]["holdout"]["size"] for r in rounds)
    assert rounds[-1]["holdout"]["accuracy_ci95"][0] <= rounds[-1]["holdout"]["accuracy"] <= 1.0
    ids = [str(orjson.loads(x)["line_no"]) for x in data.read_bytes().splitlines()]
    held = holdout_ids(ids, 0.5, 3)
    with DecisionStore(tmp_path / "out" / "store.db") as store:
        reviewed = {g.record_id for g in store.ground_truth("alert_category")}
        assert store.holdout_ids("alert_category") == held
    assert len(reviewed) == 40 and not reviewed & held
    text = policy.read_text()
    assert text.startswith(original) and text.count("policy.loop-models.yaml") == 1
    labeler = Labeler.from_file(policy)
    (model,) = labeler.policy.models
    assert summary["model"] in str(model.path)
    card = orjson.loads(next((tmp_path / "out" / "models").glob(summary["model"].replace(".joblib", ".card.json"))).read_bytes())
    assert card["holdout"]["size"] == len(held) and "loop holdout" in card["holdout"]["source"]
    assert "classes_unseen" in card["holdout"] and card["holdout"]["below_min_confidence_share"] is not None
    assert card["policy_version"].startswith("sha256:")  # the policy (with the loop's file) it labeled with
    table = (tmp_path / "out" / "rounds.txt").read_text().splitlines()
    assert table[0].startswith("round") and len(table) == 4


def test_a_second_loop_run_keeps_one_include_and_the_same_holdout(tmp_path):
    """Running the loop again on its own policy reuses the include (no duplicate models key) and the seed's holdout."""
    data, answers, policy = _bgl(tmp_path, 400)
    for out in ("a", "b"):
        res = runner.invoke(app, _loop_args(data, answers, policy, tmp_path / out))
        assert res.exit_code == 0, res.output
    assert policy.read_text().count("policy.loop-models.yaml") == 1
    with DecisionStore(tmp_path / "a" / "store.db") as a, DecisionStore(tmp_path / "b" / "store.db") as b:
        assert a.holdout_ids() == b.holdout_ids()
    assert len(Labeler.from_file(policy).policy.models) == 1


def test_a_policy_written_afresh_next_to_the_last_runs_files_still_gets_the_include(tmp_path):
    """Replacing the policy with its original text (the loop's files left beside it) and looping again works."""
    data, answers, policy = _bgl(tmp_path, 200)
    # A rule that reads the loop's novelty enricher: the policy does not load without the include.
    original = policy.read_text().replace('when: event.content.startsWith("rts panic")',
                                          'when: event.content.startsWith("rts panic") && novelty.score >= 0.0')
    assert original != policy.read_text()
    policy.write_text(original)
    for out in ("a", "b"):
        res = runner.invoke(app, _loop_args(data, answers, policy, tmp_path / out))
        assert res.exit_code == 0, res.output
        assert policy.read_text().count("policy.loop-models.yaml") == 1
        policy.write_text(original)


def test_loop_refuses_a_policy_that_already_has_a_model_for_the_label(tmp_path):
    """A hand-written model for the label is not silently doubled: the loop says what to do."""
    data, answers, policy = _bgl(tmp_path, 200)
    first = runner.invoke(app, _loop_args(data, answers, policy, tmp_path / "o1"))
    assert first.exit_code == 0, first.output
    models_file = policy.with_name("policy.loop-models.yaml")
    policy.write_text(policy.read_text().replace("  - policy.loop-models.yaml", "  - hand.yaml"))
    models_file.rename(policy.with_name("hand.yaml"))
    res = runner.invoke(app, _loop_args(data, answers, policy, tmp_path / "o2"))
    assert res.exit_code == 1 and "already labels 'alert_category'" in " ".join(res.stderr.split())


def test_loop_without_answers_waits_for_a_label_studio_export_and_goes_on(tmp_path):
    """Without --answers the round's tasks are written; an export dropped next to them is imported and the loop goes on."""
    data, _, policy = _bgl(tmp_path, 300)
    truth = {str(orjson.loads(x)["line_no"]): orjson.loads(x)["content"] for x in data.read_bytes().splitlines()}
    out = tmp_path / "out"

    def annotator() -> None:
        tasks = out / "round-1.tasks.json"
        deadline = time.monotonic() + 120
        while not tasks.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the loop to write its tasks, bounded by the deadline
        exported = orjson.loads(tasks.read_bytes())
        for n, t in enumerate(exported):
            assert truth[t["data"]["activelabel_id"]]
            t["id"] = n
            t["annotations"] = [{"completed_by": 5, "result": [{"from_name": "alert_category", "to_name": "text",
                                 "type": "choices", "value": {"choices": ["-" if n % 2 else "KERNDTLB"]}}]}]
        (out / "round-1.export.json").write_bytes(orjson.dumps(exported))

    thread = threading.Thread(target=annotator)
    thread.start()
    res = runner.invoke(app, [*_loop_args(data, None, policy, out, rounds=1), "--poll-interval", "0.05"])
    thread.join(timeout=60)
    assert res.exit_code == 0, res.output
    assert "waiting for 20 answers" in " ".join(res.stderr.split())
    with DecisionStore(out / "store.db") as store:
        assert len(store.ground_truth("alert_category")) == 20
    assert (out / "round-1.tasks.xml").read_text().count("<Choice ") == 13


def test_ensure_include_edits_one_line_and_keeps_comments_and_order(tmp_path):
    """Block lists, flow lists and a policy without include: each gains the loop's file once, nothing else changes."""
    cases = {
        "block": ("# top\nlabels: {}\ninclude:\n    - a.yaml  # kept\nrules: []\n",
                  "# top\nlabels: {}\ninclude:\n    - m.yaml\n    - a.yaml  # kept\nrules: []\n"),
        "flow": ("include: [a.yaml]  # c\nlabels: {}\n", "include: [m.yaml, a.yaml]  # c\nlabels: {}\n"),
    }
    for name, (before, after) in cases.items():
        p = tmp_path / f"{name}.yaml"
        p.write_text(before)
        assert ensure_include(p, "m.yaml") and p.read_text() == after
        assert not ensure_include(p, "m.yaml") and p.read_text() == after
    p = tmp_path / "none.yaml"
    p.write_text("# a comment\nlabels: {}\n")
    assert ensure_include(p, "m.yaml")
    assert p.read_text().startswith("# a comment\nlabels: {}\n") and p.read_text().endswith("include:\n  - m.yaml\n")


def test_near_duplicate_key_gives_one_key_per_hdfs_template():
    """Signed block ids, IPs with ports and id lists collapse: HDFS's 14 templates give 14 keys (37 before)."""
    rows = [orjson.loads(x) for x in (LOGHUB / "HDFS" / "HDFS_2k.parsed.jsonl").read_bytes().splitlines()]
    keys: dict[str, set[str]] = {}
    for r in rows:
        keys.setdefault(r["event_id"], set()).add(template_key(r["content"]))
    assert len(keys) == 14 and all(len(k) == 1 for k in keys.values())
    assert len(set().union(*keys.values())) == 14  # and no two templates share a key


def test_drift_stays_quiet_on_random_halves_of_a_long_tail_and_fires_on_novel_lines():
    """Thunderbird's 149 template ids over random halves: PSI under 0.1 (each-value bins gave ~0.3); a 30% novel share fires."""
    rows = [orjson.loads(x) for x in (LOGHUB / "Thunderbird" / "Thunderbird_2k.labeled.jsonl").read_bytes().splitlines()]
    values = [r["event_id"] for r in rows]
    for seed in range(3):
        rng = random.Random(seed)
        order = values[:]
        rng.shuffle(order)
        ref, cur = order[:1000], order[1000:]
        assert psi(ref, cur) < 0.1
        quiet = decision_drift("t", [(v, 0.9, False) for v in ref], [(v, 0.9, False) for v in cur])
        assert not quiet["drifted"]
        novel = [(v, 0.9, i % 10 < 3) for i, v in enumerate(cur)]
        fired = decision_drift("t", [(v, 0.9, False) for v in ref], novel)
        assert fired["drifted"] and "novel_share" in fired["fired"]


def test_novelty_is_zero_for_a_trained_template_and_high_for_a_new_one():
    """A line of a template the model was trained on scores 0; a template with nothing in common scores above the threshold."""
    index = NoveltyIndex.build([{"msg": "PacketResponder 1 for block blk_-42 terminating"}], ["msg"])
    assert index.score({"msg": "PacketResponder 7 for block blk_99 terminating"}) == 0.0
    new = index.score({"msg": "rdma: link retrain on port 3 lane 1"})
    assert new >= index.threshold and index.is_novel(new)


def test_open_label_config_has_a_free_text_box_and_its_value_is_imported(tmp_path):
    """A string label's config offers a text box; a typed value wins over the choice and is kept as a learned value."""
    config = label_studio_config("template", [], open_set=True)
    assert 'name="template__new"' in config and "<Choices" not in config
    store = DecisionStore(tmp_path / "s.db")
    store.record("r1", {"content": "x"}, {"labels": {"template": "E1"}})
    export = [{"id": 1, "data": {"activelabel_id": "r1"}, "annotations": [{"completed_by": {"email": "ana@x"}, "result": [
        {"from_name": "template__new", "to_name": "text", "type": "textarea", "value": {"text": ["E77"]}}]}]}]
    items, _ = read_label_studio_export(export)
    from activelabel.quality.feedback import apply_feedback

    assert apply_feedback(store, items).accepted == 1
    assert [(g.value, g.who) for g in store.ground_truth("template")] == [("E77", "ana@x")]
    assert [(v["value"], v["who"]) for v in store.learned_values("template")] == [("E77", "ana@x")]
    store.close()


def test_review_export_skips_the_holdout_and_says_a_model_strategy_needs_the_policy(tmp_path):
    """Held-out records are never exported for review; margin without --policy says it ranks like uncertainty."""
    from loop_store import recorded_store

    db = recorded_store(tmp_path)
    with DecisionStore(db) as store:
        everything = {d.record_id for d in store.decisions()}
        store.set_holdout("category", everything - {"e03", "e05"})
    out = tmp_path / "t.json"
    res = runner.invoke(app, ["review", "export", "--store", str(db), "--label", "category", "--budget", "10",
                              "--strategy", "margin", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert {t["data"]["activelabel_id"] for t in orjson.loads(out.read_bytes())} == {"e03", "e05"}
    assert "without --policy it has only the recorded confidence" in " ".join(res.stderr.split())


def test_report_leads_with_the_holdout_and_flags_the_training_feedback_as_optimistic(tmp_path):
    """After a loop, report's headline is the holdout score (the loop's own figure is beside it), and the
    items the model was trained on are scored apart and flagged optimistic: in JSON, terminal and HTML."""
    data, answers, policy = _bgl(tmp_path, 400)
    looped = runner.invoke(app, [*_loop_args(data, answers, policy, tmp_path / "out"), "--json"])
    assert looped.exit_code == 0, looped.output
    last = [orjson.loads(x) for x in looped.stdout.splitlines()][-2]["holdout"]
    store = str(tmp_path / "out" / "store.db")
    res = runner.invoke(app, ["report", "--store", store, "--label", "alert_category", "--json"])
    assert res.exit_code == 0, res.output
    report = orjson.loads(res.stdout)
    splits = report["evaluation"]["alert_category"]["splits"]
    assert splits["holdout"]["n"] > 150 and not splits["holdout"]["optimistic"]
    assert splits["trained_on"]["optimistic"] and splits["trained_on"]["n"] == 40
    lab = report["labels"]["alert_category"]
    assert lab["scored_on"] == "holdout" and lab["judged"] == splits["holdout"]["n"] == last["judged"]
    assert lab["quality"]["accuracy"] == splits["holdout"]["accuracy"]
    assert lab["reviewed"]["judged"] == 40 and lab["reviewed"]["optimistic"]
    model = next(m for source, m in lab["sources"].items() if source.startswith("model:"))
    assert model["correct"] + model["incorrect"] > 150  # counted on the holdout, not on the 40 it was trained on
    pool = lab["holdout_pool_classes"]
    assert pool["macro_f1"] == pytest.approx(last["macro_f1"]) and pool["n"] == last["seen_class_lines"]
    values = report["drift"]["labels"]["alert_category"]
    assert len(values["bins"]) == len(set(values["bins"]))  # `(other)` once, however the rare values were folded
    decisions = report["drift"]["decisions"]["alert_category"]
    assert {"unset_share", "novel_share", "mean_confidence"} <= set(decisions["checks"])

    text = runner.invoke(app, ["report", "--store", store, "--label", "alert_category"]).stdout
    overview = next(line for line in text.splitlines() if line.startswith("│ alert_category"))
    assert overview.split("│")[2].strip() == "holdout"
    assert f"{lab['quality']['accuracy']:.3f}" in overview
    trained = next(line for line in text.splitlines() if "│ trained on" in line)
    assert "optimistic" in trained and f"{splits['trained_on']['accuracy']:.3f}" in trained
    assert "Decision drift" in text and "unset share" in text

    html_path = tmp_path / "r.html"
    assert runner.invoke(app, ["report", "--store", store, "--label", "alert_category", "--html",
                               str(html_path)]).exit_code == 0
    html = html_path.read_text()
    assert "What each score is measured on" in html and "optimistic: the model&#39;s own training data" in html
    assert "Decision drift" in html


def test_novelty_strategy_spreads_a_round_over_different_new_templates():
    """Budget 2 over two variants of one new template and one other new template picks one of each, not both variants."""
    from activelabel.quality.novelty import template_words
    from activelabel.quality.review import select_for_review
    from activelabel.quality.store import StoredDecision

    texts = {"a": "disk quota exceeded on volume home", "b": "disk quota exceeded on volume scratch",
             "c": "fan speed low sensor tripped", "d": "PacketResponder 1 for block blk_2 terminating"}
    decisions = [StoredDecision(k, 0.0, None, {}, {}, {}, {}, {"content": v}) for k, v in texts.items()]
    index = NoveltyIndex.build([{"msg": texts["d"]}], ["msg"])
    novelty = {k: index.score({"msg": v}) for k, v in texts.items()}
    words = {k: template_words(v) for k, v in texts.items()}
    picked = select_for_review(decisions, label="x", budget=2, strategy="novelty", novelty=novelty,
                               template_words=words, seed=1)
    ids = {p.decision.record_id for p in picked}
    assert "c" in ids and len(ids & {"a", "b"}) == 1


def test_novelty_strategy_spends_its_uncertainty_share_on_the_line_the_model_is_least_sure_of():
    """A new class whose line looks like a known one ranks below unrelated new lines by novelty;
    an uncertainty share reviews it first."""
    from activelabel.quality.novelty import template_words
    from activelabel.quality.review import select_for_review
    from activelabel.quality.store import StoredDecision

    texts = {"timeout": "ciod: Error reading message prefix on CioStream socket, Connection timed out",
             "fan": "fan speed low sensor tripped", "disk": "disk quota exceeded on volume home",
             "known": "ciod: Error reading message prefix on CioStream socket, Link has been severed"}
    decisions = [StoredDecision(k, 0.0, None, {}, {}, {}, {}, {"content": v}) for k, v in texts.items()]
    index = NoveltyIndex.build([{"msg": texts["known"]}], ["msg"])
    novelty = {k: index.score({"msg": v}) for k, v in texts.items()}
    words = {k: template_words(v) for k, v in texts.items()}
    sure = {"timeout": 0.41, "fan": 0.55, "disk": 0.6, "known": 0.99}
    plain = select_for_review(decisions, label="x", budget=2, strategy="novelty", novelty=novelty,
                              template_words=words, seed=1, exclude={"known"})
    assert {p.decision.record_id for p in plain} == {"fan", "disk"}
    mixed = select_for_review(decisions, label="x", budget=2, strategy="novelty", novelty=novelty,
                              template_words=words, seed=1, exclude={"known"}, confidence=sure,
                              uncertainty_share=0.5)
    assert mixed[0].decision.record_id == "timeout" and len(mixed) == 2


def test_novelty_strategy_spends_what_is_left_once_nothing_is_novel_on_a_second_example_of_a_class_reviewed_once():
    """A class reviewed on one line cannot show which of its words is a parameter, so its other lines stay novel.
    Once no line is novel, the round goes to a line the model takes for that class (one per class), not to the
    line farthest from training: after it, the class's lines with other words there are not novel any more."""
    from activelabel.quality.novelty import template_tokens, template_words
    from activelabel.quality.review import select_for_review
    from activelabel.quality.store import StoredDecision

    reviewed = {"kshell": ("E1", "session opened for admin by service kshell"),
                "fan": ("E2", "fan speed low on sensor 3 tripped now")}
    texts = {"ftp": "session opened for admin by service ftp",    # E1 again, another service
             "cron": "session opened for admin by service cron",  # E1 again: only one per class
             "fan2": "fan speed low on sensor 4 reading",  # E2, far from its line, other length
             "fan3": "fan speed low on sensor 5 tripped now"}  # E2, its reviewed template
    decisions = [StoredDecision(k, 0.0, None, {}, {}, {}, {}, {"content": v}) for k, v in texts.items()]
    index = NoveltyIndex.build([{"msg": t} for _, t in reviewed.values()], ["msg"], labels=[c for c, _ in reviewed.values()])
    novelty = {k: index.score({"msg": v}) for k, v in texts.items()}
    assert not any(index.is_novel(s) for s in novelty.values()) and novelty["fan2"] > novelty["ftp"]
    words = {k: template_words(v) for k, v in texts.items()}
    seconds = {"ftp": ("E1", 0.7), "cron": ("E1", 0.6)}
    kw = {"label": "x", "budget": 2, "strategy": "novelty", "novelty": novelty, "template_words": words, "seed": 1}
    plain = [p.decision.record_id for p in select_for_review(decisions, **kw)]
    assert plain[0] == "fan2"
    picked = [p.decision.record_id for p in select_for_review(decisions, **kw, second_examples=seconds,
                                                              novelty_threshold=index.threshold)]
    assert picked[0] == "ftp" and "cron" not in picked and len(picked) == 2
    # What the second example teaches: `service` is a parameter, so another service's line is not novel.
    toks = [template_tokens(reviewed["kshell"][1]), template_tokens(texts["ftp"])]
    taught = NoveltyIndex.build([{"msg": reviewed["kshell"][1]}, {"msg": texts["ftp"]}], ["msg"], labels=["E1", "E1"])
    assert len(toks[0]) == len(toks[1]) and taught.score_text("session opened for admin by service telnet") == 0.0


def _stderr(res) -> str:
    return " ".join(res.stderr.split())


def test_answers_for_another_label_or_unmatched_ids_are_refused_with_what_to_do(tmp_path):
    """A truth file that cannot answer anything stops the loop before it edits the policy, saying why."""
    data, answers, policy = _bgl(tmp_path, 200)
    original = policy.read_bytes()
    other = tmp_path / "other.jsonl"
    other.write_text(answers.read_text().replace('"label":"alert_category"', '"label":"category"'))
    res = runner.invoke(app, _loop_args(data, other, policy, tmp_path / "o1"))
    assert res.exit_code == 1 and "no answer for label 'alert_category'" in _stderr(res)
    assert "category (200)" in _stderr(res)
    args = [a for a in _loop_args(data, answers, policy, tmp_path / "o2") if a not in ("--id-field", "line_no")]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "none of its 200 ids is a record" in _stderr(res) and "--id-field" in _stderr(res)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(app, _loop_args(empty, answers, policy, tmp_path / "o3"))
    assert res.exit_code == 1 and "no records" in _stderr(res)
    assert policy.read_bytes() == original and not policy.with_name("policy.loop-models.yaml").exists()


def test_bad_answer_lines_and_values_the_label_refuses_are_named_and_left_out_of_the_holdout(tmp_path):
    data, answers, policy = _bgl(tmp_path, 300)
    lines = answers.read_text().splitlines()
    lines[5] = lines[5].replace(orjson.loads(lines[5])["value"], "NOT_A_CLASS")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(["{not json", '["an", "array"]', *lines]) + "\n")
    res = runner.invoke(app, [*_loop_args(data, bad, policy, tmp_path / "out", rounds=1), "--json"])
    assert res.exit_code == 0, res.output
    err = _stderr(res)
    assert "2 lines ignored" in err and "bad.jsonl:1" in err
    assert "1 answers refused by label 'alert_category'" in err and "NOT_A_CLASS" in err
    refused_id = str(orjson.loads(lines[5])["id"])
    with DecisionStore(tmp_path / "out" / "store.db") as store:
        assert "NOT_A_CLASS" not in {str(v) for v in store.holdout_truth("alert_category").values()}
        assert refused_id not in {g.record_id for g in store.ground_truth("alert_category")}
    first = orjson.loads(res.stdout.splitlines()[1])  # round 1
    assert first["annotation"]["picked"] == 20 and first["annotation"]["accepted"] + \
        first["annotation"]["unanswered"] == 20


def test_another_seed_on_the_same_store_is_refused_and_the_same_command_goes_on_keeping_history(tmp_path):
    """A second holdout in one store would score models on their training data; the same run again continues."""
    data, answers, policy = _bgl(tmp_path, 300)
    out = tmp_path / "out"
    assert runner.invoke(app, _loop_args(data, answers, policy, out, rounds=1)).exit_code == 0
    res = runner.invoke(app, [*_loop_args(data, answers, policy, out, rounds=1), "--json"])
    assert res.exit_code == 0, res.output
    assert "continuing:" in _stderr(res) and "already holds 20 reviewed items" in _stderr(res)
    first = orjson.loads(res.stdout.splitlines()[0])
    assert first["reviewed"] == 20 and first["model"] is not None  # the earlier run's model, scored as it is
    assert len((out / "rounds.jsonl").read_text().splitlines()) == 4  # two runs of rounds 0 and 1
    assert (out / "rounds.txt").read_text().count("round  reviewed") == 2
    args = _loop_args(data, answers, policy, out, rounds=1)
    args[args.index("--seed") + 1] = "4"
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "already holds a holdout of" in _stderr(res) and "new --out" in _stderr(res)


def test_a_refused_run_leaves_the_policy_as_it_was(tmp_path):
    data, answers, policy = _bgl(tmp_path, 200)
    original = policy.read_bytes()
    answers.write_text(answers.read_text().replace('"label":"alert_category"', '"label":"nosuch"'))
    args = _loop_args(data, answers, policy, tmp_path / "out")
    args[args.index("--label") + 1] = "nosuch"
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "no label 'nosuch'" in _stderr(res)
    assert policy.read_bytes() == original
    assert not policy.with_name("policy.loop-models.yaml").exists()
    assert not policy.with_name("policy.loop-novelty.json").exists()


def test_a_crlf_policy_keeps_its_line_endings(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_bytes(b"# ours\r\napiVersion: activelabel/v1\r\nkind: Policy\r\n")
    assert ensure_include(policy, "p.loop-models.yaml")
    raw = policy.read_bytes()
    assert raw.startswith(b"# ours\r\napiVersion") and b"\n" not in raw.replace(b"\r\n", b"")
    assert b"  - p.loop-models.yaml\r\n" in raw


def test_repeated_ids_and_the_default_features_are_said(tmp_path):
    data, answers, policy = _bgl(tmp_path, 200)
    data.write_bytes(data.read_bytes() + data.read_bytes().splitlines(keepends=True)[3])
    args = [a for a in _loop_args(data, answers, policy, tmp_path / "out", rounds=1) if not a.startswith(("--feature", "msg=", "level="))]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    err = _stderr(res)
    assert "1 lines repeat the record id of an earlier line (first: line 201)" in err
    features = err.split("features (")[1].split(" 200 records")[0]
    assert "content=event.content" in features and "line_no" not in features
