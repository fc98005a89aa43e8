"""The node's policy: every request outside it is named with its setting and the value asked."""

from __future__ import annotations

import pytest

from primia.config import from_mapping
from primia.crypto.secagg import Setup
from primia.errors import ConfigError
from primia.federated.plan import PlanLimits, TrainPlan
from primia.federated.policy import (
    AcceptedModel,
    NodePolicy,
    accepted_models,
    aggregation_problems,
    dp_problems,
    model_problems,
    plan_aggregation_problems,
    required_threshold,
    roster_problems,
)
from primia.federated.tasks import FederationPlan
from primia.models.checkpoint import ModelSpec

DEFAULT = NodePolicy()


def setup(participants: int, threshold: int) -> Setup:
    return Setup(
        session=bytes(16),
        round=1,
        participants=tuple(f"site{k}" for k in range(participants)),
        threshold=threshold,
        bits=32,
        clip=8.0,
        vector_length=10,
    )


def spec(architecture: str = "cnn", width: int | None = None) -> ModelSpec:
    return ModelSpec(architecture=architecture, num_outputs=2, width=width)


def test_the_default_refuses_plaintext_and_names_the_setting():
    (problem,) = aggregation_problems(DEFAULT, None)
    assert problem.startswith("policy.aggregation=['secure']: the coordinator asks for plaintext")
    assert "in the clear" in problem


def test_plaintext_passes_only_when_listed_by_name():
    policy = NodePolicy(aggregation=("secure", "plaintext"))
    assert policy.allows_plaintext and not DEFAULT.allows_plaintext
    assert aggregation_problems(policy, None) == []


def test_a_node_that_allows_only_plaintext_refuses_secure_rounds():
    policy = NodePolicy(aggregation=("plaintext",))
    (problem,) = aggregation_problems(policy, setup(3, 2))
    assert problem.startswith("policy.aggregation=['plaintext']")


@pytest.mark.parametrize(
    ("participants", "threshold", "required"),
    [(3, 2, 2), (4, 3, 3), (5, 3, 3), (10, 6, 6), (11, 6, 6)],
)
def test_a_strict_majority_threshold_is_accepted(participants, threshold, required):
    assert required_threshold(DEFAULT, participants) == required
    assert aggregation_problems(DEFAULT, setup(participants, threshold)) == []


def test_threshold_2_of_5_is_refused_naming_the_floor():
    (problem,) = aggregation_problems(DEFAULT, setup(5, 2))
    assert problem.startswith("policy.min_threshold=2: the round's threshold is 2 of 5")
    assert "at least 3" in problem


def test_the_nodes_own_floor_wins_when_it_is_higher():
    policy = NodePolicy(min_threshold=4)
    assert required_threshold(policy, 5) == 4
    (problem,) = aggregation_problems(policy, setup(5, 3))
    assert problem.startswith("policy.min_threshold=4: the round's threshold is 3 of 5")
    assert aggregation_problems(policy, setup(5, 4)) == []


def test_too_few_participants_are_refused():
    (problem,) = aggregation_problems(DEFAULT, setup(2, 2))
    assert problem == "policy.min_participants=3: the round announces 2 participants (site0, site1)"
    assert aggregation_problems(NodePolicy(min_participants=2), setup(2, 2)) == []


def test_participants_that_never_advertised_keys_do_not_count():
    assert roster_problems(DEFAULT, ["site0", "site1", "site2"]) == []
    (problem,) = roster_problems(DEFAULT, ["site1", "site0"])
    assert problem.startswith(
        "policy.min_participants=3: only 2 participants advertised keys (site0, site1)"
    )


def test_every_aggregation_problem_is_reported():
    problems = aggregation_problems(NodePolicy(min_participants=6), setup(5, 2))
    settings = [problem.split("=")[0] for problem in problems]
    assert settings == ["policy.min_participants", "policy.min_threshold"]


def test_before_the_first_model_any_model_passes_and_then_only_the_pinned_one():
    assert accepted_models(DEFAULT, None) == ()
    assert model_problems(DEFAULT, spec("resnet18"), parameters=10**7, accepted=()) == []
    pinned = accepted_models(DEFAULT, AcceptedModel("cnn"))
    assert pinned == (AcceptedModel("cnn", 16),)  # the default width, stated
    assert model_problems(DEFAULT, spec("cnn"), parameters=1, accepted=pinned) == []
    assert model_problems(DEFAULT, spec("cnn", 16), parameters=1, accepted=pinned) == []
    (problem,) = model_problems(DEFAULT, spec("cnn", 64), parameters=1, accepted=pinned)
    assert problem.startswith("policy.models (pinned)=['cnn (width 16)']: the coordinator asks")
    assert "cnn (width 64)" in problem


def test_a_listed_model_is_accepted_and_another_architecture_refused():
    policy = NodePolicy(models=(AcceptedModel("resnet9", 32), AcceptedModel("cnn")))
    accepted = accepted_models(policy, AcceptedModel("lenet"))  # the list wins over a pin
    assert model_problems(policy, spec("resnet9", 32), parameters=1, accepted=accepted) == []
    (problem,) = model_problems(policy, spec("resnet18"), parameters=1, accepted=accepted)
    assert problem.startswith("policy.models=['resnet9 (width 32)', 'cnn (width 16)']")
    assert "resnet18 (width 64)" in problem


def test_a_model_holding_more_values_than_allowed_is_refused():
    policy = NodePolicy(max_parameters=1000)
    (problem,) = model_problems(policy, spec("cnn"), parameters=1001, accepted=())
    assert problem == "policy.max_parameters=1000: the model cnn (width 16) holds 1001 values"


def test_too_little_noise_is_refused_naming_the_floor_and_the_noise():
    limits = PlanLimits(min_noise_multiplier=0.8)
    (problem,) = dp_problems(limits, noise_multiplier=0.61, run_epsilon=1.0, run="r")
    assert problem.startswith("limits.min_noise_multiplier=0.8: ")
    assert "noise multiplier 0.61" in problem
    assert dp_problems(limits, noise_multiplier=0.8, run_epsilon=1.0, run="r") == []


def test_epsilon_per_run_above_the_cap_is_refused():
    limits = PlanLimits(max_epsilon_per_run=3.0)
    assert dp_problems(limits, noise_multiplier=1.0, run_epsilon=3.0, run="r1") == []
    (problem,) = dp_problems(limits, noise_multiplier=1.0, run_epsilon=3.5, run="r1")
    assert problem == (
        "limits.max_epsilon_per_run=3: this round would bring the node's ε in run r1 to 3.5"
    )
    assert dp_problems(limits, noise_multiplier=1.0, run_epsilon=float("inf"), run="r1")
    # No cap by default: the ledger's whole budget bounds it.
    assert dp_problems(PlanLimits(), noise_multiplier=1.0, run_epsilon=1e9, run="r1") == []


def test_the_policy_reads_from_toml_values():
    policy = from_mapping(
        NodePolicy,
        {
            "aggregation": ["secure", "plaintext"],
            "min_participants": 4,
            "models": [{"architecture": "resnet9", "width": 32}],
        },
        where="node.toml[policy]",
    )
    assert policy.aggregation == ("secure", "plaintext")
    assert policy.models == (AcceptedModel("resnet9", 32),)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"aggregation": []}, "policy.aggregation is empty"),
        ({"aggregation": ["clear"]}, "'clear' is not one of"),
        ({"aggregation": ["secure", "secure"]}, "lists a kind twice"),
        ({"min_participants": 1}, "policy.min_participants must be at least 2"),
        ({"min_threshold": 1}, "policy.min_threshold must be at least 2"),
        ({"max_parameters": 0}, "policy.max_parameters must be positive"),
        ({"models": [{"architecture": "vgg"}]}, "unknown architecture 'vgg'"),
        ({"models": [{"architecture": "cnn", "width": 2}]}, "width must be at least 4"),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(NodePolicy, values, where="policy")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_noise_multiplier": -0.1}, "limits.min_noise_multiplier must be 0 or more"),
        ({"max_epsilon_per_run": 0.0}, "limits.max_epsilon_per_run must be positive"),
    ],
)
def test_bad_dp_floors_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(PlanLimits, values, where="limits")


def announced(
    roster: int, min_nodes: int, threshold: int = 0, secure: bool = True
) -> FederationPlan:
    return FederationPlan(
        spec=spec(),
        plan=TrainPlan(),
        secure=secure,
        roster_size=roster,
        min_nodes=min_nodes,
        threshold=threshold,
    )


def test_a_run_announced_at_join_is_refused_only_if_no_round_of_it_fits():
    # A roster of 2 can never give the 3 participants the default policy needs.
    (problem,) = plan_aggregation_problems(DEFAULT, announced(roster=2, min_nodes=2))
    assert "policy.min_participants=3" in problem and "the whole roster's round" in problem
    # A roster of 5 with min_nodes 2 can: rounds of 3 to 5 fit.
    assert plan_aggregation_problems(DEFAULT, announced(roster=5, min_nodes=2)) == []
    # A fixed threshold of 2 fits a round of 3 (2 is its majority).
    assert plan_aggregation_problems(DEFAULT, announced(5, 2, threshold=2)) == []
    # Plaintext is refused at Join as in a round.
    (problem,) = plan_aggregation_problems(DEFAULT, announced(5, 2, secure=False))
    assert "policy.aggregation=['secure']" in problem
