"""The forty-sixth outside attack (issue #17), on fleets that change under a deploy: TARGETS by tag
whose tags change between the plan and SSM's resolution (found, fixed), a target registered by IP
address in a target group of target type ``ip`` (found, fixed: ``target_groups/addresses.py``). Each
test compares what the instances run (``current`` on disk) or what the load balancer routes, what the
ledger says, and what the step said (exit code, last line, result file, ``ACTION: status``)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e.release_support import A, B, build
from e2e.test_attack12 import _age_the_lock, _kill_at
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, make_fleet, rolling_env
from e2e.test_releases import release_env
from moto.ec2.models import ec2_backends
from standin import StandIn
from standin.instance_app import PORT
from support import LivePipe, run_pipe, wait_until

ACCOUNT = "123456789012"
SSM_POLLS = {"ListCommands", "ListCommandInvocations", "GetCommandInvocation"}


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@contextmanager
def on_send_command(standin: StandIn, act: Any, then: Any = None) -> Iterator[list[dict[str, Any]]]:
    """Call ``act(request)`` as each SendCommand reaches AWS, before SSM resolves its targets (what
    happens to tags in the moment between the pipe's plan and SSM's own look-up); ``then()`` once, as the
    first SSM request after a SendCommand reaches AWS (SSM has resolved its targets by then)."""
    seen: list[dict[str, Any]] = []
    done: list[str] = []

    def on_request(action: str, request: dict[str, Any]) -> None:
        if action == "SendCommand":
            seen.append(request)
            act(request)
        elif seen and then is not None and not done and action in SSM_POLLS:
            done.append(action)
            then()

    with standin.requests_seen(on_request):
        yield seen


def untag(standin: StandIn, instance_id: str, key: str) -> None:
    """DeleteTags, straight in EC2's model (the request thread must not call the stand-in over HTTP)."""
    backend = ec2_backends[ACCOUNT][standin.region]
    value = backend.tags[instance_id][key]
    backend.delete_tags([instance_id], {key: value})


def status(standin: StandIn, clone: Path, bucket: str, service: str, **extra: str) -> tuple[int, str]:
    env = release_env(standin, [], clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99", **extra)
    env.pop("INSTANCE_IDS")
    done = run_pipe(env, timeout=300)
    return done.returncode, done.output


# --- TARGETS by tag: an instance untagged (or terminated) between the plan and SSM's resolution -------------


def tagged_fleet(standin: StandIn, clone: Path, bucket: str, service: str) -> tuple[list[str], Any]:
    """Two instances tagged Service=<tag>, A live on both through TARGETS (one SSM command, no rollout), and
    the step's variables for a release deployed to that tag."""
    ids = standin.launch(2)
    tag = f"svc-{uuid.uuid4().hex[:8]}"
    standin.client("ec2").create_tags(Resources=ids, Tags=[{"Key": "Service", "Value": tag}])

    def env(version: str, number: str) -> dict[str, str]:
        variables = release_env(
            standin, ids, clone, bucket, service, ARTIFACT=build(clone, version), BITBUCKET_BUILD_NUMBER=number
        )
        variables.pop("INSTANCE_IDS")
        variables["TARGETS"] = f"tag:Service={tag}"
        return variables

    assert run_pipe(env("A", "1"), timeout=300).returncode == 0
    assert fleet_on_disk(standin, ids) == {ids[0]: A, ids[1]: A}
    return ids, env


def test_an_instance_untagged_between_the_plan_and_the_send_has_left_the_fleet(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances tagged Service=<tag>, no rollout (one SSM command to TARGETS, which SSM
    resolves when it receives it). B: the pipe resolves the tag (both), then, as the deploy's SendCommand
    reaches AWS, the second instance loses its tag for good (taken out of the service on purpose): SSM sends B
    to the first only. The second is no longer part of what TARGETS name: it left the fleet. Attack 46 found
    exit 0 "Deployed to 1 instance(s)" with a ledger saying partial; its fix failed the deploy and switched the
    first back (review H4: a false failure rolling back a whole fleet for an instance removed on purpose). Now
    the pipe resolves TARGETS again: the second is gone, not failed; the step, the ledger (B live, on the first
    alone), the result file and ``ACTION: status`` agree."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    tag = env("B", "2")["TARGETS"].split("=", 1)[1]

    def untag_second_at_the_deploy(request: dict[str, Any]) -> None:
        if "Targets" in request:
            untag(standin, second, "Service")

    with on_send_command(standin, untag_second_at_the_deploy) as sent:
        run = run_pipe(env("B", "2"), timeout=300)
    assert any("Targets" in request for request in sent), sent

    assert "Traceback" not in run.output
    assert run.returncode == 0, run.output
    assert f"{second} is gone, no longer matched by TARGETS" in run.output, run.output
    assert f"Deployed to 1 instance(s) ({second} left the fleet)" in last_line(run.output), run.output
    assert fleet_on_disk(standin, [first, second]) == {first: B, second: A}, run.output  # the second: untouched
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "succeeded"), entry
    assert ledger_fleet(entry) == {first: B}, entry  # what TARGETS name now: the second is no longer the service's
    assert result(tmp_path)["fleet"] == {first: B}, result(tmp_path)
    code, said = status(standin, tmp_path, bucket, service, TARGETS=f"tag:Service={tag}")
    assert code == 0 and B in said, said


def test_an_instance_untagged_for_the_send_and_tagged_back_since_fails_the_deploy(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """The same, but the second gets its tag back before the pipe resolves TARGETS again (an operator's slip,
    undone): it still runs and TARGETS match it, yet SSM left it out. It did not get B and is still in the
    fleet: the deploy fails (attack 46's fix) and the first goes back to A."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)
    tag = env("B", "2")["TARGETS"].split("=", 1)[1]

    def untag_second_at_the_deploy(request: dict[str, Any]) -> None:
        if "Targets" in request:
            untag(standin, second, "Service")

    def tag_it_back() -> None:
        ec2_backends[ACCOUNT][standin.region].create_tags([second], {"Service": tag})

    with on_send_command(standin, untag_second_at_the_deploy, then=tag_it_back):
        run = run_pipe(env("B", "2"), timeout=300)

    assert "Traceback" not in run.output
    assert run.returncode != 0, run.output
    assert f"left out {second}, still in the fleet" in run.output, run.output
    disk = fleet_on_disk(standin, [first, second])
    assert disk == {first: A, second: A}, run.output  # the one SSM reached went back: one release everywhere
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "rolled back"), entry
    assert ledger_fleet(entry) == disk, entry
    assert result(tmp_path)["fleet"] == disk, result(tmp_path)


def test_an_instance_terminated_between_the_plan_and_the_send_has_left_the_fleet(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """The second instance is terminated (scaled in by hand, a Spot interruption) as the deploy's SendCommand
    reaches AWS: its agent is gone, SSM's invocation on it ends Undeliverable. It is no longer running: it left
    the fleet, and the deploy succeeds on the first (review H4). Before, the deploy failed and B was switched
    back on the first."""
    (first, second), env = tagged_fleet(standin, tmp_path, bucket, service)

    def terminate_second_at_the_deploy(request: dict[str, Any]) -> None:
        if "Targets" in request:
            ec2_backends[ACCOUNT][standin.region].terminate_instances([second])

    with on_send_command(standin, terminate_second_at_the_deploy):
        run = run_pipe(env("B", "2"), timeout=300)

    assert "Traceback" not in run.output
    assert run.returncode == 0, run.output
    assert f"{second} is gone, no longer running (terminated)" in run.output, run.output
    assert f"Deployed to 1 instance(s) ({second} left the fleet)" in last_line(run.output), run.output
    assert fleet_on_disk(standin, [first]) == {first: B}, run.output
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "succeeded"), entry
    assert ledger_fleet(entry) == {first: B}, entry
    assert result(tmp_path)["fleet"] == {first: B}, result(tmp_path)


# --- a target registered by IP address in a group of target type `ip` -------------------------------------


def ip_group(standin: StandIn, fleet: Fleet, deregistration_delay: int) -> tuple[str, str, list[str | None]]:
    """A group of target type ``ip`` behind a load balancer of its own holding the fleet's private addresses
    on the app's port, once each is healthy: its name, its ARN and the addresses."""
    name = f"ip-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, fleet.ids, deregistration_delay=deregistration_delay, target_type="ip")
    addresses = [standin.address_of(i) for i in fleet.ids]
    wait_until(
        lambda: standin.port_states(arn) == {(a, PORT): "healthy" for a in addresses if a}, "ip targets healthy", 30
    )
    return name, arn, addresses


def test_each_batch_leaves_an_ip_target_group_its_instance_is_registered_in_by_address(standin: StandIn) -> None:
    """Two instances behind a named group (instance targets) and, by their private IP on the app's port, in
    a group of target type ``ip`` behind another load balancer (an ECS-style or cross-VPC set-up). Each batch
    must leave that group too, as it leaves every group it is registered in, or that load balancer keeps
    sending the instance requests while its app restarts."""
    fleet = make_fleet(standin, 2)
    by_ip, ip_arn, addresses = ip_group(standin, fleet, deregistration_delay=20)
    journal = len(standin.load_balancer.changes(ip_arn))

    run = run_pipe(rolling_env(standin, fleet, COMMANDS="true"), timeout=200)

    assert run.returncode == 0, run.output
    first, second = addresses
    assert standin.load_balancer.changes(ip_arn)[journal:] == [
        ("deregister", [(first, PORT)]),
        ("register", [(first, PORT)]),
        ("deregister", [(second, PORT)]),
        ("register", [(second, PORT)]),
    ], run.output
    assert f"target group {by_ip}: 2 healthy of 2 registered, 2 of them deployed here" in run.output
    assert f"batch 1/2 (1 instance(s)): draining from {fleet.group_name}, {by_ip}" in run.output
    assert standin.port_states(ip_arn) == {(a, PORT): "healthy" for a in addresses if a}


def test_a_stop_while_a_batch_drains_from_a_named_ip_group_registers_its_address_again(standin: StandIn) -> None:
    """TARGET_GROUPS names the ``ip`` group; SIGTERM while the first batch drains from it (600 s, 30 s at the
    stand-in's scale): the address is registered again, as an instance target is, and nothing is deployed."""
    fleet = make_fleet(standin, 2)
    by_ip, ip_arn, addresses = ip_group(standin, fleet, deregistration_delay=600)
    journal, sent = len(standin.load_balancer.changes(ip_arn)), len(standin.sent_commands())
    pipe = LivePipe(rolling_env(standin, fleet, TARGET_GROUPS=by_ip, COMMANDS="true"))
    pipe.wait_for_line("batch 1/2 (1 instance(s)): draining from", timeout=60)
    wait_until(lambda: "draining" in standin.port_states(ip_arn).values(), "draining", 10)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=60)

    assert run.returncode != 0 and "registered again" in run.output, run.output
    first = addresses[0]
    assert standin.load_balancer.changes(ip_arn)[journal:] == [
        ("deregister", [(first, PORT)]),
        ("register", [(first, PORT)]),
    ], run.output
    assert not {"draining", "unused"} & set(standin.port_states(ip_arn).values()), standin.port_states(ip_arn)
    assert len(standin.sent_commands()) == sent  # stopped while draining: nothing was deployed


def test_a_killed_builds_address_whose_instance_was_terminated_since_is_not_registered_again(
    standin: StandIn,
) -> None:
    """Found by review (H2): a build killed while its first batch is out of an ``ip`` group leaves the address
    in its record; its instance is terminated since. RegisterTargets refuses a terminated instance's id but
    takes any address, so the next deploy registered the dead instance's address again (one another interface
    may hold by then) and waited for it. The address must stay out, named, and the rest be put back."""
    fleet = make_fleet(standin, 3)
    by_ip = f"ip-{uuid.uuid4().hex[:8]}"
    ip_arn = standin.create_target_group(by_ip, fleet.ids, deregistration_delay=20, target_type="ip")
    address = {i: str(standin.address_of(i)) for i in fleet.ids}
    wait_until(lambda: set(standin.port_states(ip_arn).values()) == {"healthy"}, "ip targets healthy", 30)
    env = rolling_env(standin, fleet, COMMANDS="echo deploy-is-running\nsleep 600", BITBUCKET_BUILD_NUMBER="41")
    _kill_at(env, "deploy-is-running")
    for command in standin.sent_commands():  # its command dies with the runner's session
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    (gone,) = [i for i in fleet.ids if standin.port_states(ip_arn).get((address[i], PORT)) != "healthy"]
    standin.client("ec2").terminate_instances(InstanceIds=[gone])
    _age_the_lock(standin, f"/deploy-lock/{fleet.group_name}/_")
    left = [i for i in fleet.ids if i != gone]

    run = run_pipe(
        rolling_env(standin, fleet, INSTANCE_IDS=" ".join(left), COMMANDS="true", BITBUCKET_BUILD_NUMBER="42"),
        timeout=300,
    )

    assert f"{address[gone]} was not registered again in {by_ip}: its instance {gone} is terminated" in run.output
    assert (address[gone], PORT) not in standin.port_states(ip_arn), (standin.port_states(ip_arn), run.output)
    assert {standin.port_states(ip_arn).get((address[i], PORT)) for i in left} == {"healthy"}, run.output
    assert run.returncode == 0, run.output
