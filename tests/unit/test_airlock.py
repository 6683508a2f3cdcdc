"""The output airlock: two independent checkers, hidden votes, conflicts, revocation, release."""

import json

import pytest

from permits.permissions import PermissionDenied
from secure_env.airlock import outputs as A
from tests.factories import make_case, make_staff, make_user
from toisio import audit


@pytest.fixture
def world(svc, tmp_path):
    staff = make_staff(svc)
    permit = make_case(svc, staff).case_id  # bob is the named analyst
    checkers = {"oscar": staff["oscar"], **{u: make_user(svc, u, ("output_checker",)) for u in ("olga", "otto")}}
    from toisio.identity import Actor

    bob = Actor("bob")
    safe = tmp_path / "by_county.csv"
    safe.write_text("county,men,women\nHelsinki,120,130\nLappi,40,45\n")
    small = tmp_path / "rare.csv"
    small.write_text("group,n\nA,3\nB,50\n")
    fig = tmp_path / "km.png"
    fig.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    return {"svc": svc, "permit": permit, "bob": bob, "staff": staff, "files": {"safe": safe, "small": small,
                                                                              "fig": fig}, **checkers}


CTX = {"description": "persons by county and sex", "method": "count of distinct pseudonyms",
       "index": "county"}


def _request(w, *files):
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    for key in files:
        ctx = dict(CTX, index="group" if key == "small" else "county")
        A.add_file(w["svc"], w["bob"], rid, w["files"][key], ctx)
    A.submit(w["svc"], w["bob"], rid)
    return rid




def test_two_approvals_then_release(world):
    w = world
    rid = _request(w, "safe", "fig")
    view = A.view(w["svc"], w["oscar"], rid)
    assert {f["name"]: f["check_status"] for f in view["files"]} == {"by_county.csv": "pass", "km.png": "review"}
    for checker in ("oscar", "olga"):
        for name in ("by_county.csv", "km.png"):
            A.vote(w["svc"], w[checker], rid, name, "approve")
        A.submit_review(w["svc"], w[checker], rid)
    assert A.decide(w["svc"], w["oscar"], rid, "approve").value == "approved"
    target = A.release(w["svc"], w["olga"], rid)
    manifest = json.loads((target / "manifest.json").read_text())
    assert {f["name"] for f in manifest["files"]} == {"by_county.csv", "km.png"}
    assert all(len(f["reviewers"]) == 2 for f in manifest["files"])
    assert (target / "by_county.csv").read_text().startswith("county")
    with w["svc"].engine.connect() as conn:
        actions = [e.action for e in audit.events(conn, subject=f"output:{rid}")]
    for a in ("output.created", "output.file_added", "output.submit", "output.viewed", "output.voted",
              "output.review_submitted", "output.approve", "output.release"):
        assert a in actions


def test_failing_table_is_flagged(world):
    w = world
    rid = _request(w, "small")
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_status"] == "fail"
    assert "fewer than the minimum 5" in f["check_report"]["cells"][0]["reasons"][0]


def test_no_self_review_and_no_permit_member_review(world, svc):
    w = world
    rid = _request(w, "safe")
    with pytest.raises(PermissionDenied, match="only an output checker may"):
        A.vote(svc, w["bob"], rid, "by_county.csv", "approve")
    make_user(svc, "mona", ("output_checker",))
    from toisio.identity import Actor, Role

    member_checker = Actor("bob", frozenset({Role.OUTPUT_CHECKER}))
    with pytest.raises(PermissionDenied) as exc:
        A.vote(svc, member_checker, rid, "by_county.csv", "approve")
    assert exc.value.code == "conflict_of_interest"


def test_one_approval_is_not_enough(world):
    w = world
    rid = _request(w, "safe")
    A.vote(w["svc"], w["oscar"], rid, "by_county.csv", "approve")
    A.submit_review(w["svc"], w["oscar"], rid)
    with pytest.raises(Exception, match="not possible|two independent approvals"):
        A.decide(w["svc"], w["oscar"], rid, "approve")


def test_votes_hidden_until_own_review_submitted(world):
    w = world
    rid = _request(w, "safe")
    A.vote(w["svc"], w["oscar"], rid, "by_county.csv", "approve")
    A.submit_review(w["svc"], w["oscar"], rid)
    assert A.view(w["svc"], w["olga"], rid)["files"][0]["votes"] == []
    A.vote(w["svc"], w["olga"], rid, "by_county.csv", "approve")
    assert [v["reviewer"] for v in A.view(w["svc"], w["olga"], rid)["files"][0]["votes"]] == ["olga"]
    A.submit_review(w["svc"], w["olga"], rid)
    assert {v["reviewer"] for v in A.view(w["svc"], w["olga"], rid)["files"][0]["votes"]} == {"oscar", "olga"}


def test_submit_only_after_voting_on_every_file(world):
    w = world
    rid = _request(w, "safe", "fig")
    A.vote(w["svc"], w["oscar"], rid, "by_county.csv", "approve")
    with pytest.raises(A.AirlockError, match="not yet voted: km.png"):
        A.submit_review(w["svc"], w["oscar"], rid)


def test_conflict_settled_by_a_third_checker(world):
    w = world
    rid = _request(w, "safe")
    A.vote(w["svc"], w["oscar"], rid, "by_county.csv", "approve")
    A.submit_review(w["svc"], w["oscar"], rid)
    A.vote(w["svc"], w["olga"], rid, "by_county.csv", "reject", "Lappi women cell is too revealing")
    A.submit_review(w["svc"], w["olga"], rid)
    assert A.view(w["svc"], w["otto"], rid)["files"][0]["status"] == "conflicted"
    with pytest.raises(A.AirlockError, match="not approved: by_county.csv \\(conflicted\\)"):
        A.decide(w["svc"], w["oscar"], rid, "approve")
    A.vote(w["svc"], w["otto"], rid, "by_county.csv", "reject", "agree with Olga")
    A.submit_review(w["svc"], w["otto"], rid)
    assert A.view(w["svc"], w["otto"], rid)["files"][0]["status"] == "rejected"
    assert A.decide(w["svc"], w["otto"], rid, "reject").value == "rejected"


def test_returned_request_keeps_history_and_is_resubmitted(world):
    w = world
    rid = _request(w, "small")
    for c in ("oscar", "olga"):
        A.vote(w["svc"], w[c], rid, "rare.csv", "request_changes", "suppress group A")
        A.submit_review(w["svc"], w[c], rid)
    A.decide(w["svc"], w["oscar"], rid, "return")
    seen = A.view(w["svc"], w["bob"], rid)
    assert seen["state"] == "returned" and len(seen["files"][0]["votes"]) == 2
    A.add_file(w["svc"], w["bob"], rid, w["files"]["safe"], CTX)
    assert A.submit(w["svc"], w["bob"], rid).value == "submitted"
    again = A.view(w["svc"], w["oscar"], rid)
    assert again["round"] == 2 and all(f["votes"] == [] for f in again["files"])
    with w["svc"].engine.connect() as conn:
        actions = [e.action for e in audit.events(conn, subject=f"output:{rid}")]
    assert actions.count("output.voted") == 2 and "output.return" in actions and "output.resubmit" in actions


def test_approval_can_be_revoked_before_release(world):
    w = world
    rid = _request(w, "safe")
    for c in ("oscar", "olga"):
        A.vote(w["svc"], w[c], rid, "by_county.csv", "approve")
        A.submit_review(w["svc"], w[c], rid)
    A.decide(w["svc"], w["oscar"], rid, "approve")
    assert A.revoke_approval(w["svc"], w["olga"], rid, "clicked too soon").value == "reviewed"
    with pytest.raises(A.AirlockError, match="only an approved request is released"):
        A.release(w["svc"], w["oscar"], rid)


def test_checker_queue_and_released_history(world):
    w = world
    first = _request(w, "safe")
    second = _request(w, "fig")
    assert {r["request_id"] for r in A.checker_queue(w["svc"], w["oscar"])} == {first, second}
    for c in ("oscar", "olga"):
        A.vote(w["svc"], w[c], first, "by_county.csv", "approve")
        A.submit_review(w["svc"], w[c], first)
    A.decide(w["svc"], w["oscar"], first, "approve")
    A.release(w["svc"], w["oscar"], first)
    assert [r["request_id"] for r in A.checker_queue(w["svc"], w["oscar"])] == [second]
    released = A.view(w["svc"], w["otto"], second)["released_before"]
    assert released and released[0]["file"] == "by_county.csv"


def test_unsupported_type_and_missing_context(world, tmp_path):
    w = world
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    exe = tmp_path / "data.sqlite"
    exe.write_bytes(b"x")
    with pytest.raises(A.AirlockError, match="unsupported output type .sqlite"):
        A.add_file(w["svc"], w["bob"], rid, exe, CTX)
    with pytest.raises(A.AirlockError, match="context needs 'method'"):
        A.add_file(w["svc"], w["bob"], rid, w["files"]["safe"], {"description": "x"})


def test_only_named_analysts_request(world):
    w = world
    from toisio.identity import Actor

    with pytest.raises(PermissionDenied, match="only an analyst named on the permit may"):
        A.create_request(w["svc"], Actor("mallory"), w["permit"])


def test_differencing_against_released_tables(world, tmp_path):
    w = world
    first = _request(w, "safe")
    for c in ("oscar", "olga"):
        A.vote(w["svc"], w[c], first, "by_county.csv", "approve")
        A.submit_review(w["svc"], w[c], first)
    A.decide(w["svc"], w["oscar"], first, "approve")
    A.release(w["svc"], w["oscar"], first)
    nearly = tmp_path / "by_county_adults.csv"
    nearly.write_text("county,men,women\nHelsinki,118,130\nLappi,40,45\n")
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, nearly, CTX)
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_status"] == "fail"
    assert any("differs from released table" in x for x in f["check_report"]["table_findings"])


def test_profile_per_permit_from_the_authority_configuration(world):
    w = world
    (w["svc"].settings.home / "disclosure.yaml").write_text(f"""
profiles:
  strict-authority: {{min_count: 100, nk_n: 2, nk_k: 0.9, p_percent: 10, min_residual_df: 10,
                     zeros_disclosive: true}}
permits:
  {w["permit"]}: strict-authority
""")
    rid = _request(w, "safe")
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_status"] == "fail" and f["check_report"]["profile"] == "strict-authority"


# ------------------------------------------------------------ groups, supporting files, comments


def _grouped(w):
    """A request with an output table and a supporting file in group 'deaths', described and submitted."""
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, w["files"]["safe"], CTX, group="deaths")
    A.add_file(w["svc"], w["bob"], rid, w["files"]["small"], {"description": "the counts behind the figure"},
               group="deaths", supporting=True)
    A.describe_group(w["svc"], w["bob"], rid, "deaths", context="deaths by county for paper 1",
                     controls="counts under 5 suppressed")
    A.submit(w["svc"], w["bob"], rid)
    return rid


def test_groups_carry_context_and_controls_and_supporting_files_are_never_released(world):
    w = world
    rid = _grouped(w)
    v = A.view(w["svc"], w["oscar"], rid)
    [group] = v["groups"]
    assert (group["name"], group["context"], group["controls"]) == (
        "deaths", "deaths by county for paper 1", "counts under 5 suppressed")
    assert group["files"] == ["by_county.csv", "rare.csv"]
    supporting = next(f for f in v["files"] if f["name"] == "rare.csv")
    assert supporting["supporting"] and supporting["status"] == "supporting"
    # a supporting file is not checked as an output (it would fail the minimum count) and nobody votes on it
    assert supporting["check_status"] == "supporting"
    with pytest.raises(A.AirlockError, match="supporting file") as exc:
        A.vote(w["svc"], w["oscar"], rid, "rare.csv", "approve")
    assert exc.value.code == "supporting_file"
    # the checker still sees it (the preview), audited like any file
    assert A.read_file(w["svc"], w["oscar"], rid, "rare.csv").startswith(b"group,n")
    for checker in ("oscar", "olga"):
        A.vote(w["svc"], w[checker], rid, "by_county.csv", "approve")
        A.submit_review(w["svc"], w[checker], rid)  # the supporting file needs no vote
    A.decide(w["svc"], w["oscar"], rid, "approve")
    target = A.release(w["svc"], w["olga"], rid)
    assert sorted(p.name for p in target.iterdir()) == ["by_county.csv", "manifest.json"]
    assert [f["name"] for f in json.loads((target / "manifest.json").read_text())["files"]] == ["by_county.csv"]
    with pytest.raises(A.AirlockError, match="released no file"):
        A.released_file(w["svc"], w["bob"], rid, "rare.csv")
    assert [r["files"] for r in A.requests_of(w["svc"], w["bob"]) if r["request_id"] == rid] == [["by_county.csv"]]
    with w["svc"].engine.connect() as conn:
        assert {x["file"] for x in A.released_for_permit(conn, w["permit"])} == {"by_county.csv"}


def test_a_request_of_supporting_files_only_cannot_be_submitted(world):
    w = world
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, w["files"]["small"], {"description": "the counts"}, supporting=True)
    with pytest.raises(A.AirlockError, match="at least one file to release") as exc:
        A.submit(w["svc"], w["bob"], rid)
    assert exc.value.code == "empty_request"


@pytest.mark.parametrize("name", ["a/b", "..\\x", "x" * 101, "tab\there"])
def test_a_bad_group_name_is_refused(world, name):
    w = world
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    with pytest.raises(A.AirlockError) as exc:
        A.add_file(w["svc"], w["bob"], rid, w["files"]["safe"], CTX, group=name)
    assert exc.value.code == "bad_group"


def test_only_the_requester_describes_a_group_and_only_while_editable(world):
    w = world
    rid = _grouped(w)
    with pytest.raises(A.AirlockError, match="pending or returned"):
        A.describe_group(w["svc"], w["bob"], rid, "deaths", context="x", controls="y")
    rid2 = A.create_request(w["svc"], w["bob"], w["permit"])
    with pytest.raises(PermissionDenied, match="only the request's author"):
        A.describe_group(w["svc"], w["oscar"], rid2, "default", context="x", controls="y")


def _comments(w, viewer, rid):
    return [(c["author"], c["visibility"], c["text"]) for g in A.view(w["svc"], w[viewer] if isinstance(
        viewer, str) else viewer, rid)["groups"] for c in g["comments"]]


def test_comments_are_blind_until_own_review_and_private_ones_never_reach_the_requester(world):
    w = world
    rid = _grouped(w)
    A.comment(w["svc"], w["oscar"], rid, "deaths", "row Lappi is close to the threshold", "private")
    A.comment(w["svc"], w["oscar"], rid, "deaths", "please round to 5", "public")
    # the other checker does not see them before submitting a review; the author does
    assert _comments(w, "olga", rid) == []
    assert len(_comments(w, "oscar", rid)) == 2
    # the requester sees neither while the round is open
    assert _comments(w, w["bob"], rid) == []
    A.vote(w["svc"], w["oscar"], rid, "by_county.csv", "request_changes", "round to 5")
    A.submit_review(w["svc"], w["oscar"], rid)
    A.vote(w["svc"], w["olga"], rid, "by_county.csv", "request_changes", "agree")
    assert _comments(w, "olga", rid) == []
    A.submit_review(w["svc"], w["olga"], rid)
    assert [c[1] for c in _comments(w, "olga", rid)] == ["private", "public"]
    A.decide(w["svc"], w["olga"], rid, "return")
    # returned: the requester sees the public comment only, and replies publicly
    assert _comments(w, w["bob"], rid) == [("oscar", "public", "please round to 5")]
    with pytest.raises(A.AirlockError, match="replies are public") as exc:
        A.comment(w["svc"], w["bob"], rid, "deaths", "secret", "private")
    assert exc.value.code == "bad_visibility"
    A.comment(w["svc"], w["bob"], rid, "deaths", "rounded in the new version")
    # a new round: earlier comments are open to every checker, the reply too
    A.submit(w["svc"], w["bob"], rid)
    assert ("bob", "public", "rounded in the new version") in _comments(w, "otto", rid)
    assert len(_comments(w, "otto", rid)) == 3
    # an auditor sees everything
    from toisio.identity import Actor, Role

    auditor = Actor("aud", frozenset({Role.AUDITOR}))
    assert len(_comments(w, auditor, rid)) == 3
    with w["svc"].engine.connect() as conn:
        logged = [e.payload for e in audit.events(conn, subject=f"output:{rid}") if e.action == "output.commented"]
    assert [p["visibility"] for p in logged] == ["private", "public", "public"]


def test_a_comment_needs_text_a_known_group_and_a_reviewer(world):
    w = world
    rid = _grouped(w)
    with pytest.raises(A.AirlockError, match="needs some text"):
        A.comment(w["svc"], w["oscar"], rid, "deaths", "  ")
    with pytest.raises(A.AirlockError, match="no group 'other'"):
        A.comment(w["svc"], w["oscar"], rid, "other", "hello")
    with pytest.raises(A.AirlockError, match="visibility must be"):
        A.comment(w["svc"], w["oscar"], rid, "deaths", "hello", "secret")
    from toisio.identity import Actor

    with pytest.raises(PermissionDenied):
        A.comment(w["svc"], Actor("mallory"), rid, "deaths", "hello")


def test_comment_visibility_covers_every_case():
    """The pure rule, case by case (the domain test above walks it through a request)."""
    from secure_env.airlock.rules import comment_visible

    base = dict(author="oscar", visibility="public", comment_round=1, viewer="bob", requester="bob",
                viewer_reviews=False, viewer_audits=False, viewer_submitted=False, current_round=1,
                outcome_known=False)

    def seen(**kw):
        return comment_visible(**{**base, **kw})

    assert not seen()  # the requester, round open
    assert seen(outcome_known=True)
    assert seen(comment_round=1, current_round=2)
    assert not seen(visibility="private", outcome_known=True)
    assert not seen(visibility="private", comment_round=1, current_round=2)
    assert seen(viewer="oscar")  # its author
    assert seen(viewer="aud", viewer_audits=True, visibility="private")
    assert seen(author="bob", viewer="olga", viewer_reviews=True)  # the requester's reply
    assert not seen(viewer="olga", viewer_reviews=True, visibility="private")  # blind
    assert seen(viewer="olga", viewer_reviews=True, visibility="private", viewer_submitted=True)
    assert seen(viewer="olga", viewer_reviews=True, visibility="private", comment_round=1, current_round=2)
    assert not seen(viewer="mona", visibility="private", outcome_known=True)  # the holder: never private
    with pytest.raises(ValueError, match="unknown comment visibility"):
        seen(visibility="secret")


@pytest.mark.parametrize("check, exception, reason, refused", [
    ("pass", "", "", None), ("review", "", "", None), ("supporting", "", "", None),
    ("fail", "", "", "exception_missing"), ("fail", "", "I checked", "exception_missing"),
    ("fail", "  ", "I checked", "exception_missing"), ("fail", "needed for the paper", "", "override_reason_missing"),
    ("fail", "needed for the paper", " ", "override_reason_missing"), ("fail", "needed", "cell is public", None)])
def test_approval_of_a_failed_file_needs_an_exception_and_an_override_reason(check, exception, reason, refused):
    from secure_env.airlock import rules

    assert rules.approval_refused(check, exception=exception, reason=reason) == refused
    assert refused is None or refused in rules.OVERRIDE_NEEDS


def _failed_request(w, exception=""):
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    ctx = dict(CTX, index="group", **({"exception": exception} if exception else {}))
    A.add_file(w["svc"], w["bob"], rid, w["files"]["small"], ctx)
    A.submit(w["svc"], w["bob"], rid)
    return rid


def test_an_automatic_fail_without_an_exception_cannot_be_approved(world):
    w = world
    rid = _failed_request(w)
    with pytest.raises(A.AirlockError, match="ask for an exception") as e:
        A.vote(w["svc"], w["oscar"], rid, "rare.csv", "approve", "looks fine to me")
    assert e.value.code == "exception_missing"
    # a rejection needs no exception
    A.vote(w["svc"], w["oscar"], rid, "rare.csv", "reject", "group A has 3 persons")


def test_an_exception_is_approved_only_with_each_checkers_override_reason(world):
    w = world
    rid = _failed_request(w, "the count of 3 is a published national figure")
    with pytest.raises(A.AirlockError) as e:
        A.vote(w["svc"], w["oscar"], rid, "rare.csv", "approve")
    assert e.value.code == "override_reason_missing"
    for c in ("oscar", "olga"):
        A.vote(w["svc"], w[c], rid, "rare.csv", "approve", f"{c}: the figure is in Statistics Finland's tables")
        A.submit_review(w["svc"], w[c], rid)
    assert A.decide(w["svc"], w["oscar"], rid, "approve").value == "approved"
    target = A.release(w["svc"], w["olga"], rid)
    manifest = json.loads((target / "manifest.json").read_text())
    f = manifest["files"][0]
    assert f["exception"] == "the count of 3 is a published national figure"
    assert sorted(r["override_reason"] for r in f["reviewers"]) == [
        "olga: the figure is in Statistics Finland's tables", "oscar: the figure is in Statistics Finland's tables"]
    assert manifest["policy"]["approvals_needed"] == 2
    with w["svc"].engine.connect() as conn:
        decision = [e for e in audit.events(conn, subject=f"output:{rid}") if e.action == "output.approve"][-1]
    assert decision.payload["policy"]["automatic_fail"].startswith("approved only with")


def test_an_approval_without_a_reason_written_around_vote_does_not_count(world):
    """Defence in depth: an approve vote of a failed file without a reason, put in the table directly, is not
    counted by the status the decision reads."""
    from sqlalchemy import update

    from secure_env.airlock.models import ReviewVoteRow

    w = world
    rid = _failed_request(w, "needed")
    for c in ("oscar", "olga"):
        A.vote(w["svc"], w[c], rid, "rare.csv", "approve", "reason")
        A.submit_review(w["svc"], w[c], rid)
    with w["svc"].engine.begin() as conn:
        conn.execute(update(ReviewVoteRow).where(ReviewVoteRow.request_id == rid).values(comment=""))
    with pytest.raises(A.AirlockError) as e:
        A.decide(w["svc"], w["oscar"], rid, "approve")
    assert e.value.code == "not_approved"


def test_an_exception_must_be_words_and_not_on_a_supporting_file(world):
    w = world
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    with pytest.raises(A.AirlockError) as e:
        A.add_file(w["svc"], w["bob"], rid, w["files"]["small"], dict(CTX, index="group", exception=["x"]))
    assert e.value.code == "bad_exception"
    with pytest.raises(A.AirlockError) as e:
        A.add_file(w["svc"], w["bob"], rid, w["files"]["small"], {"description": "log", "exception": "please"},
                   supporting=True)
    assert e.value.code == "bad_exception"


def test_text_in_a_cell_is_not_dropped_unchecked_and_labels_need_no_index(world, tmp_path):
    w = world
    marked = tmp_path / "marked.csv"
    marked.write_text("county,sex,n\nHelsinki,men,120\nHelsinki,women,<5\nLappi,men,40\nLappi,women,45\n")
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, marked, {"description": "persons", "method": "count"})
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_status"] == "review"
    assert any("cell (('Helsinki', 'women'), n) holds '<5'" in x for x in f["check_report"]["table_findings"])
    with pytest.raises(A.AirlockError) as e:
        A.add_file(w["svc"], w["bob"], rid, marked, {"description": "persons", "method": "count", "index": "region"})
    assert e.value.code == "bad_index" and "county, sex, n" in str(e.value)


def test_a_helper_table_is_verified_against_the_delivered_data_and_an_edited_one_is_not(world, tmp_path,
                                                                                       monkeypatch):
    import numpy as np
    import pandas as pd

    from secure_env.analyst import ACRO
    from secure_env.workspace.provision import paths

    w = world
    data = paths(w["svc"], w["permit"]).data
    (data / "persons").mkdir(parents=True)
    rng = np.random.default_rng(8)
    n = 400
    pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n)], "sex": rng.choice(["1", "2"], n),
                  "euros": rng.gamma(2, 40, n)}).to_parquet(data / "persons" / "p.parquet")
    monkeypatch.setenv("TOISIO_DATA", str(data))
    acro = ACRO(suppress=True)
    df = acro.read("persons")
    acro.pivot_table(df, values="euros", index="sex", aggfunc="mean")
    out = acro.finalise(tmp_path / "outputs")
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, out / "output_0.csv", {"description": "mean euros", "method": "ACRO"})
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_report"]["verified"] is True and f["check_status"] == "pass"
    assert f["context"]["spec"]["aggfunc"] == "mean"  # the specification is kept with the file
    # a number edited after the helper wrote it: unverified, to review, with the reason
    text = (out / "output_0.csv").read_text().splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + ",99.5"
    (out / "output_0.csv").write_text("\n".join(text) + "\n")
    A.add_file(w["svc"], w["bob"], rid, out / "output_0.csv", {"description": "mean euros", "method": "ACRO"})
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_report"]["verified"] is False and f["check_status"] == "review"
    assert "unverified" in f["check_report"]["verification"] and "when run again" in f["check_report"][
        "verification"]


def test_a_helper_model_is_verified_and_its_exception_reaches_the_checkers(world, tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from secure_env.analyst import ACRO
    from secure_env.workspace.provision import paths

    w = world
    data = paths(w["svc"], w["permit"]).data
    (data / "cohort").mkdir(parents=True)
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n)], "x": rng.normal(size=n),
                       "group": ["rare"] * 2 + list(rng.choice(["a", "b"], n - 2))})
    df["y"] = df.x + rng.normal(size=n)
    df.to_parquet(data / "cohort" / "p.parquet")
    monkeypatch.setenv("TOISIO_DATA", str(data))
    acro = ACRO()
    acro.olsr("y ~ x + C(group)", data=acro.read("cohort"))
    acro.add_exception("output_0", "the rare group's coefficient is not reported in the paper")
    out = acro.finalise(tmp_path / "models")
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, out / "output_0.csv", {"description": "model", "method": "OLS"})
    f = A.view(w["svc"], w["oscar"], rid)["files"][0]
    assert f["check_report"]["verified"] is True and f["check_status"] == "fail"
    assert any("records behind it" in x for x in f["check_report"]["table_findings"])
    assert f["context"]["exception"] == "the rare group's coefficient is not reported in the paper"
