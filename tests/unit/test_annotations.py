"""Annotations and sessionAffinity into farm options, with a problem for every bad value."""

from __future__ import annotations

import pytest

from reconciler.core.annotations import (
    ANNOTATION_PREFIX,
    ANNOTATIONS,
    FarmOptions,
    farm_options,
)
from reconciler.core.farms import (
    DEFAULT_AFFINITY_TIMEOUT,
    DEFAULT_PERSIST_TTL,
    LOG_HOOKS,
    PACKET_FIELDS,
    Helper,
    Mode,
    Scheduler,
)
from reconciler.core.kube import Service
from reconciler.core.problems import ObjectRef, Problem

P = ANNOTATION_PREFIX


def svc(
    annotations: dict[str, str] | None = None,
    affinity: str = "None",
    timeout: int | None = None,
) -> Service:
    return Service(
        namespace="shop",
        name="web",
        annotations=tuple((annotations or {}).items()),
        session_affinity=affinity,
        affinity_timeout=timeout,
    )


def options(
    annotations: dict[str, str] | None = None, affinity: str = "None", timeout: int | None = None
) -> FarmOptions:
    opts, problems = farm_options(svc(annotations, affinity, timeout))
    assert problems == []
    return opts


def one_problem(annotations: dict[str, str]) -> tuple[FarmOptions, Problem]:
    opts, problems = farm_options(svc(annotations))
    assert len(problems) == 1, problems
    return opts, problems[0]


def test_defaults_without_annotations() -> None:
    assert options() == FarmOptions(
        mode=Mode.DNAT,
        mode_set=False,
        scheduler=Scheduler.RR,
        sched_param=(),
        persistence=(),
        persist_ttl=DEFAULT_PERSIST_TTL,
        helper=Helper.NONE,
        log=(),
        est_connlimit=0,
    )


def test_every_annotation_with_a_good_value() -> None:
    opts = options(
        {
            P + "mode": "dnat",
            P + "scheduler": "hash",
            P + "sched-param": "dstport srcip",
            P + "persistence": "srcport,srcip",
            P + "helper": "ftp",
            P + "log": "output input",
            P + "est-connlimit": "250",
        }
    )
    assert opts == FarmOptions(
        mode=Mode.DNAT,
        mode_set=True,
        scheduler=Scheduler.HASH,
        sched_param=("srcip", "dstport"),
        persistence=("srcip", "srcport"),
        persist_ttl=DEFAULT_PERSIST_TTL,
        helper=Helper.FTP,
        log=("input", "output"),
        est_connlimit=250,
    )


def test_values_are_stripped_and_case_insensitive() -> None:
    opts = options(
        {P + "mode": "  SNAT ", P + "scheduler": "Weight", P + "log": " Output , INPUT "}
    )
    assert (opts.mode, opts.mode_set, opts.scheduler) == (Mode.SNAT, True, Scheduler.WEIGHT)
    assert opts.log == ("input", "output")


def test_the_forward_log_hook_is_refused_with_the_reason() -> None:
    opts, problems = farm_options(svc({P + "log": "forward"}))
    assert opts.log == ()
    [problem] = problems
    assert problem.value == "forward" and problem.allowed == ("none", "input", "output")


def test_only_prefixed_keys_count() -> None:
    assert options({"mode": "snat", "scheduler": "hash", "log": "input"}) == FarmOptions()


def test_an_unknown_prefixed_key_names_the_known_keys() -> None:
    opts, problems = farm_options(svc({P + "moed": "dnat"}))
    assert opts == FarmOptions()
    [problem] = problems
    assert problem.reason == "UnknownAnnotation"
    assert problem.key == P + "moed"
    assert problem.allowed == tuple(ANNOTATIONS)
    assert P + "mode" in problem.message


@pytest.mark.parametrize("mode", ["dsr", "stlsdnat", "local", "DSR"])
def test_modes_a_service_cannot_use_are_refused_with_the_reason(mode: str) -> None:
    opts, problem = one_problem({P + "mode": mode})
    assert (opts.mode, opts.mode_set) == (Mode.DNAT, False)
    assert problem.reason == "InvalidAnnotation"
    assert problem.ref == ObjectRef("Service", "shop", "web")
    assert problem.allowed == ("snat", "dnat")
    assert "refused" in problem.message
    assert ("MAC" in problem.message) or ("no backends" in problem.message)


@pytest.mark.parametrize(
    ("suffix", "value", "field", "default", "allowed"),
    [
        ("mode", "fast", "mode", Mode.DNAT, ("snat", "dnat")),
        ("scheduler", "random", "scheduler", Scheduler.RR, ("rr", "weight", "hash", "symhash")),
        ("helper", "amanda", "helper", Helper.NONE, tuple(h.value for h in Helper)),
        ("persistence", "srcip bogus", "persistence", (), ("none", *PACKET_FIELDS)),
        ("persistence", "none srcip", "persistence", (), ("none", *PACKET_FIELDS)),
        ("persistence", "", "persistence", (), ("none", *PACKET_FIELDS)),
        ("log", "everything", "log", (), ("none", *LOG_HOOKS)),
        ("est-connlimit", "-1", "est_connlimit", 0, ("0-1000000",)),
        ("est-connlimit", "1000001", "est_connlimit", 0, ("0-1000000",)),
        ("est-connlimit", "ten", "est_connlimit", 0, ("0-1000000",)),
        ("est-connlimit", "1.5", "est_connlimit", 0, ("0-1000000",)),
        ("est-connlimit", "٣", "est_connlimit", 0, ("0-1000000",)),
        ("est-connlimit", "9" * 5000, "est_connlimit", 0, ("0-1000000",)),
    ],
)
def test_a_bad_value_gives_the_default_and_a_problem_naming_key_value_and_allowed(
    suffix: str, value: str, field: str, default: object, allowed: tuple[str, ...]
) -> None:
    opts, problem = one_problem({P + suffix: value})
    assert getattr(opts, field) == default
    assert problem.reason == "InvalidAnnotation"
    assert problem.key == P + suffix
    if len(value) <= 100:
        assert problem.value == value
    else:  # kept short for Events
        assert problem.value.startswith(value[:50])
        assert len(problem.value) <= 100
    assert problem.allowed == allowed
    assert P + suffix in problem.message
    assert all(a in problem.message for a in allowed if a != "none")


def test_a_bad_value_only_resets_its_own_field() -> None:
    opts, problems = farm_options(svc({P + "scheduler": "random", P + "helper": "sip"}))
    assert [p.key for p in problems] == [P + "scheduler"]
    assert opts.helper is Helper.SIP


def test_est_connlimit_bounds_and_leading_zeros() -> None:
    assert options({P + "est-connlimit": "1000000"}).est_connlimit == 1_000_000
    assert options({P + "est-connlimit": " 007 "}).est_connlimit == 7
    assert options({P + "est-connlimit": "0"}).est_connlimit == 0


def test_hash_without_sched_param_hashes_the_source_ip() -> None:
    assert options({P + "scheduler": "hash"}).sched_param == ("srcip",)


def test_a_bad_sched_param_with_hash_falls_back_to_srcip() -> None:
    opts, problem = one_problem({P + "scheduler": "hash", P + "sched-param": "srcip,oops"})
    assert opts.sched_param == ("srcip",)
    assert problem.allowed == PACKET_FIELDS


@pytest.mark.parametrize("scheduler", ["rr", "weight", "symhash"])
def test_sched_param_without_hash_is_a_problem_and_ignored(scheduler: str) -> None:
    opts, problem = one_problem({P + "scheduler": scheduler, P + "sched-param": "dstip"})
    assert opts.sched_param == ()
    assert problem.key == P + "sched-param"
    assert "hash" in problem.message


def test_sched_param_tokens_are_canonical_and_unique() -> None:
    opts = options({P + "scheduler": "hash", P + "sched-param": "dstmac srcip srcip,dstport"})
    assert opts.sched_param == ("srcip", "dstport", "dstmac")


# -- sessionAffinity -------------------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "ttl"), [(10, 10), (75, 75), (86400, 86400), (1, 1)])
def test_affinity_timeout_is_read_in_base_10(timeout: int, ttl: int) -> None:
    opts = options(affinity="ClientIP", timeout=timeout)
    assert opts.persistence == ("srcip",)
    assert opts.persist_ttl == ttl


def test_client_ip_affinity_without_timeout_uses_kubernetes_default() -> None:
    opts = options(affinity="ClientIP")
    assert opts.persistence == ("srcip",)
    assert opts.persist_ttl == DEFAULT_AFFINITY_TIMEOUT == 10800


@pytest.mark.parametrize("timeout", [0, -5, 86401])
def test_affinity_timeout_out_of_range_is_a_problem_and_the_default(timeout: int) -> None:
    opts, problems = farm_options(svc(affinity="ClientIP", timeout=timeout))
    assert opts.persist_ttl == 10800
    [problem] = problems
    assert problem.reason == "InvalidSessionAffinity"
    assert problem.value == str(timeout)
    assert problem.key == "spec.sessionAffinityConfig.clientIP.timeoutSeconds"


def test_timeout_without_client_ip_affinity_is_ignored() -> None:
    opts = options(affinity="None", timeout=5)
    assert (opts.persistence, opts.persist_ttl) == ((), DEFAULT_PERSIST_TTL)


def test_persistence_annotation_overrides_affinity_but_keeps_its_timeout() -> None:
    opts = options({P + "persistence": "srcip dstport"}, affinity="ClientIP", timeout=75)
    assert opts.persistence == ("srcip", "dstport")
    assert opts.persist_ttl == 75
    opts = options({P + "persistence": "none"}, affinity="ClientIP", timeout=75)
    assert opts.persistence == ()


def test_a_bad_persistence_annotation_falls_back_to_the_affinity() -> None:
    opts, problems = farm_options(svc({P + "persistence": "bogus"}, "ClientIP", 30))
    assert opts.persistence == ("srcip",)
    assert opts.persist_ttl == 30
    assert [p.reason for p in problems] == ["InvalidAnnotation"]
    assert "srcip" in problems[0].message  # says what is used instead


def test_persistence_without_affinity_keeps_nftlbs_ttl() -> None:
    opts = options({P + "persistence": "srcip"})
    assert (opts.persistence, opts.persist_ttl) == (("srcip",), DEFAULT_PERSIST_TTL)


# -- the table -------------------------------------------------------------------------------------


def test_the_table_lists_every_key_with_the_prefix_and_a_doc() -> None:
    assert set(ANNOTATIONS) == {
        P + s
        for s in (
            "mode",
            "scheduler",
            "sched-param",
            "persistence",
            "helper",
            "log",
            "est-connlimit",
        )
    }
    for key, spec in ANNOTATIONS.items():
        assert spec.key == key
        assert spec.doc
        assert spec.suffix == key.removeprefix(P)
        if spec.allowed is not None:
            assert all(type(v) is str for v in spec.allowed)
            assert all(w in spec.allowed for w in spec.default.split())


def test_table_defaults_are_what_an_unannotated_service_gets() -> None:
    opts = options()
    assert ANNOTATIONS[P + "mode"].default == opts.mode
    assert ANNOTATIONS[P + "scheduler"].default == opts.scheduler
    assert ANNOTATIONS[P + "helper"].default == opts.helper
    assert ANNOTATIONS[P + "est-connlimit"].default == str(opts.est_connlimit)
    assert ANNOTATIONS[P + "log"].default == "none"
    assert ANNOTATIONS[P + "persistence"].default == "none"
