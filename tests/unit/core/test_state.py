from __future__ import annotations

from pathlib import Path

from watcher.core.state import State


def test_commit_history_stable_and_intents(tmp_path: Path) -> None:
    st = State(tmp_path / "s.db")
    r1 = st.record_seen("m", "rev1", source="etcd", version="v1.0.0", spec={"v": 1, "metadata": {"model_id": "a"}})
    st.write_intent("m", "rev1", {"v": 1}, None, "hot")
    assert [i.model for i in st.intents()] == ["m"]
    st.commit(r1, "m", "rev1", "v1.0.0", {"v": 1}, plan="hot (*)")
    assert st.intents() == []
    r2 = st.record_seen("m", "rev2", source="etcd")
    st.finish(r2, "rejected", "version '1.2' is not semver")
    applied = st.applied("m")
    assert applied is not None and applied.revision == "rev1" and applied.stable_revision == "rev1"
    assert st.last_handled("m") == "rev2"
    rows = st.history("m")
    assert [r["outcome"] for r in rows] == ["rejected", "applied"]
    assert rows[1]["metadata"] == {"model_id": "a"} and rows[1]["stable"] is True
    assert st.last_stable("m", before="rev9")["revision"] == "rev1"  # type: ignore[index]
    assert st.last_stable("m", before="rev1") is None
    status = st.status()
    assert status["models"]["m"]["applied_revision"] == "rev1"
    assert status["models"]["m"]["last_outcome"] == "rejected"


def test_rollback_rows_do_not_count_as_handled(tmp_path: Path) -> None:
    st = State(tmp_path / "s.db")
    r = st.record_seen("m", "rev2", source="localdir")
    st.finish(r, "rolled_back", "by operator")
    rb = st.record_seen("m", "rev1", source="rollback")
    st.finish(rb, "applied")
    assert st.last_handled("m") == "rev2"


def test_readonly_reader_sees_the_writer(tmp_path: Path) -> None:
    w = State(tmp_path / "s.db")
    w.daemon_started("localdir")
    w.set_source(False, "connection refused")
    r = State(tmp_path / "s.db", readonly=True)
    d = r.status()["daemon"]
    assert d["running"] is True and d["source_up"] is False and d["source_detail"] == "connection refused"
    w.daemon_stopped()
    assert r.status()["daemon"]["running"] is False


def test_requests_queue(tmp_path: Path) -> None:
    st = State(tmp_path / "s.db")
    rid = st.add_request("rollback", "m", None, "operator:root")
    assert [q["id"] for q in st.pending_requests()] == [rid]
    st.finish_request(rid, True, "applied")
    assert st.pending_requests() == [] and st.request(rid)["ok"] == 1  # type: ignore[index]
