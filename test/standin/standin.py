"""Start, seed and stop the local AWS stand-in."""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from standin import auto_scaling, instance_app, isolation, moto_bridge, power, tools
from standin.associations import Associations
from standin.cloudwatch import INSTANCE_APP_ID, LogsSinks
from standin.fleet import FakeInstance, Fleet
from standin.haproxy import HaproxyDataPlane
from standin.hosts import PrivateNetwork
from standin.live_tail import LogsReads
from standin.load_balancer import LoadBalancerModel
from standin.load_generator import LoadGenerator
from standin.network import FlakyProxy
from standin.service import RunCommandService, SentCommand
from standin.users import AppUser, ensure_app_user

ACCOUNT = "123456789012"  # moto's default account
ADMIN_KEYS = {
    "aws_access_key_id": "AKIASTANDINADMIN0000",
    "aws_secret_access_key": "StandinAdminSecretKey0000000000000000000",
}
AGENT_KEYS = {
    "aws_access_key_id": "AKIASTANDININSTANCE0",
    "aws_secret_access_key": "StandinInstanceSecretKey0000000000000000",
}
AMI = "ami-12c6146b"  # one of moto's built-in images
# The agent's PATH on Amazon Linux (what `env` prints in AWS-RunShellScript), /sbin and /bin added
# for machines whose / is not merged into /usr.
AGENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


STATE_PARENT = Path("/var/tmp")  # the stand-in's folders: not under a root each instance has its own of


class StandIn:
    """moto on 127.0.0.1 with Run Command executed by local processes, each instance a host of its
    own: its own network namespace and address (``hosts.py``), processes (``pid_namespace.py``) and
    file system (``isolation.py``).

    ``root`` holds the instances' folders; by default a new folder under /var/tmp, removed on stop."""

    def __init__(self, root: Path | None = None, region: str = "eu-west-1", upload_interval: float = 0.2) -> None:
        self._owns_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="ssm-deploy-standin-", dir=STATE_PARENT))
        self.region = region
        self.network = PrivateNetwork()
        self.app_user: AppUser | None = None  # the machine's account (start); its home is on every instance
        self.fleet = Fleet(self.root / "instances", self.network, self._provision)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        # the same moto on the subnet's router address: the instances' endpoint (their 127.0.0.1 is their own)
        self._instance_server: ThreadedMotoServer | None = None
        self.endpoint = ""
        self.instance_endpoint = ""
        self.subnet_id = ""
        self._hybrid_addresses = 0
        self.admin_keys = dict(ADMIN_KEYS)  # what the tests' own clients use
        self._clients: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}  # see client()
        self._clients_lock = threading.Lock()
        self.agent_keys = dict(AGENT_KEYS)  # the instances' role: the agent and the AWS CLI on them
        self.logs_sinks = LogsSinks()  # one CloudWatch Logs client for all invocations' uploads
        self.logs_reads = LogsReads()  # Live Tail sessions and the FilterLogEvents quota, with counters
        self.service = RunCommandService(
            self.fleet,
            self.instance_environment,
            lambda: self.logs_sinks.get(self.endpoint, self.region, self.agent_keys),
            upload_interval,
        )
        # ELBv2 target groups: target health from real HTTP health checks (``load_balancer.py``, the
        # control plane; ``elb_time_scale`` shortens its intervals and delays), requests through one
        # HAProxy per group (``haproxy.py``, the data plane)
        self.data_plane = HaproxyDataPlane()
        self.load_balancer = LoadBalancerModel(
            moto_bridge.target_group_settings, self.address_of, data_plane=self.data_plane
        )

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> StandIn:
        isolation.probe()  # before anything starts: IsolationUnavailable says why
        tools.require()
        self.app_user = ensure_app_user()
        self.network.start()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._instance_server = ThreadedMotoServer(ip_address=self.network.router, port=0, verbose=False)
        self._instance_server.start()
        router, router_port = self._instance_server.get_host_and_port()
        self.instance_endpoint = f"http://{router}:{router_port}"
        moto_bridge.install(self.service)
        moto_bridge.install_logs_reads(self.logs_reads)
        moto_bridge.install_load_balancer(self.load_balancer)
        self.auto_scaling = auto_scaling.AutoScalingModel(
            self._add_group_instance,
            auto_scaling.lose(self.service, self.fleet),
            self.load_balancer,
        )
        auto_scaling.install(self.auto_scaling)
        power.install(self._stopped, self.service.start_instance)
        self.associations = Associations(self._association_send, self._ec2_tags, self.fleet.ids)
        moto_bridge.install_associations(self.associations)
        self.auto_scaling.on_online.append(self.associations.instance_online)
        self.subnet_id = self._create_subnet()
        self.load_balancer.start()
        return self

    def stop(self) -> None:
        if hasattr(self, "associations"):
            self.associations.wait_idle(10)
        self.load_balancer.stop()
        self.data_plane.stop()
        self.service.cancel_all()
        self.service.wait_idle(10)
        if self._instance_server is not None:
            self._instance_server.stop()
        self._server.stop()
        self.network.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _provision(self, instance_root: Path) -> None:
        """What every new instance has before its first command, as its AMI gives: the app user's home."""
        if self.app_user is None:
            raise RuntimeError("StandIn.start() was not called")
        self.app_user.install_home(instance_root)

    def _stopped(self, instance_id: str) -> None:
        """StopInstances: the agent is lost (``service.stop_instance``), then every process of the instance dies."""
        self.service.stop_instance(instance_id)
        if self.fleet.get(instance_id) is not None:
            self.network.kill([instance_id])

    def _add_group_instance(self, instance_id: str, address: str, name: str) -> None:
        """An instance an Auto Scaling group launched: managed, with its own host, like ``launch``'s."""
        self.fleet.add(instance_id, address, name=name)

    def _association_send(self, request: dict[str, Any]) -> str:
        """An association's run: its document on one instance, as Run Command runs it."""
        return str(self.client("ssm").send_command(**request)["Command"]["CommandId"])

    def _ec2_tags(self, instance_id: str) -> dict[str, str]:
        answer = self.client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])
        return {str(t["Key"]): str(t["Value"]) for t in answer.get("Tags", [])}

    def _create_subnet(self) -> str:
        """The subnet of the stand-in's network in the default VPC: instances get their address there."""
        ec2 = self.client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=str(self.network.subnet), AvailabilityZone=f"{self.region}a")[
            "Subnet"
        ]
        return str(subnet["SubnetId"])

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- clients and environments ----------------------------------------------------------------
    def client(self, service: str, own: bool = False) -> Any:
        """A boto3 client of the stand-in with the admin keys. Shared: one per service and keys
        (boto3's clients are thread-safe, and building one takes milliseconds of CPU, which hundreds
        of calls per test session add up to); ``own=True`` builds a new one, for a test that changes
        its client (registers an event handler)."""
        key = (service, self.endpoint, tuple(sorted(self.admin_keys.items())))
        with self._clients_lock:
            shared = None if own else self._clients.get(key)
        if shared is not None:
            return shared
        made = boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            config=Config(inject_host_prefix=False),  # see pipe_env: one endpoint serves every host prefix
            **self.admin_keys,
        )
        if not own:
            with self._clients_lock:
                made = self._clients.setdefault(key, made)
        return made

    def pipe_env(self, **variables: str) -> dict[str, str]:
        """Environment for a pipe process pointed at the stand-in, with Bitbucket's build variables."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.admin_keys["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.admin_keys["aws_secret_access_key"],
            # StartLiveTail goes to the host "stream-<endpoint host>" on AWS (SDK host prefix injection);
            # the stand-in serves every operation on one address, so the SDK must not add the prefix
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "BITBUCKET_REPO_FULL_NAME": "acme/web-api",
            "BITBUCKET_REPO_SLUG": "web-api",
            "BITBUCKET_BUILD_NUMBER": "42",
            "BITBUCKET_COMMIT": "0123456789abcdef0123456789abcdef01234567",
            "BITBUCKET_BRANCH": "main",
            "BITBUCKET_STEP_TRIGGERER_UUID": "{5f1c2a3b-0000-4000-8000-000000000001}",
            # no Bitbucket to post a Code Insights report to: a test that checks the report turns it on
            # with a fake reports API as its proxy (test/fakes/bitbucket_reports.py)
            "CODE_INSIGHTS": "false",
        }
        env.update(variables)
        return env

    def instance_environment(self) -> dict[str, str]:
        """What an instance's processes see: the AWS CLI on PATH and the instance role's credentials.

        The agent's own PATH (sbin folders included, as on AWS: runuser, useradd) with the AWS CLI
        first; the agent also sets per invocation AWS_SSM_INSTANCE_ID, SSM_COMMAND_ID and
        AWS_SSM_REGION_NAME (``agent.py``). Unlike AWS's agent, HOME is set: the instance's folder.
        The endpoint is the stand-in's address on the instances' subnet."""
        return {
            "PATH": f"{tools.AWS_CLI_BIN}:{AGENT_PATH}",
            "LANG": "C.UTF-8",
            "AWS_ENDPOINT_URL": self.instance_endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.agent_keys["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.agent_keys["aws_secret_access_key"],
            "AWS_SDK_UA_APP_ID": INSTANCE_APP_ID,  # tells the instances' calls apart (service.instance_calls)
        }

    # --- seeding ---------------------------------------------------------------------------------
    def launch(
        self, count: int = 1, name: str = "web", tags: dict[str, str] | None = None, **behaviour: Any
    ) -> list[str]:
        """Run EC2 instances in moto (one RunInstances call, tagged ``Name`` plus ``tags``) and
        register them as managed instances with a local home. ``behaviour``: ``FakeInstance`` fields."""
        launched = self._run_instances(count, {"Name": name, **(tags or {})})
        for instance_id, address in launched.items():
            self.fleet.add(instance_id, address, name=name, **behaviour)
        return list(launched)

    def register_hybrid(
        self, count: int = 1, name: str = "onprem", tags: dict[str, str] | None = None, **behaviour: Any
    ) -> list[str]:
        """Hybrid (on-premises) managed nodes: ``mi-`` ids that EC2 does not know, tagged in SSM
        (as an activation's tags or AddTagsToResource with ResourceType ManagedInstance would)."""
        ids = [f"mi-{uuid.uuid4().hex[:17]}" for _ in range(count)]
        for instance_id in ids:
            self.fleet.add(
                instance_id,
                self._hybrid_address(),
                name=name,
                resource_type="ManagedInstance",
                ssm_tags=dict(tags or {}),
                **behaviour,
            )
        return ids

    def _hybrid_address(self) -> str:
        """An address for a hybrid node, from the top of the subnet down (EC2 assigns from the bottom up)."""
        self._hybrid_addresses += 1
        subnet = self.network.subnet
        return str(ipaddress.ip_address(int(subnet.broadcast_address) - self._hybrid_addresses))

    def retire(self, instance_ids: list[str]) -> None:
        """End what these instances still run once nothing will look at them again (a test is over):
        the load balancer stops checking them (``LoadBalancerModel.forget``) and every process in
        their namespaces is killed (pm2 daemons, apps). Not an AWS action, and nothing a test sees:
        the instances stay managed, their files stay. Without it, the apps of every earlier test
        kept answering health checks until the session ended, the largest CPU cost of a test run."""
        self.load_balancer.forget(instance_ids)
        self.network.kill(instance_ids)

    def instance(self, instance_id: str) -> FakeInstance:
        found = self.fleet.get(instance_id)
        if found is None:
            raise KeyError(instance_id)
        return found

    def instance_path(self, instance_id: str, path: str) -> Path:
        """Where an absolute path of the instance (under /home, /root, /tmp, /srv or /opt) is on this
        machine, to inspect what commands did there: ``instance_path(i, "/srv/web-api/current")`` is
        ``<instance folder>/root/srv/web-api/current`` (see ``isolation.py``). ValueError for a
        path outside the mapped roots (shared by every instance, so never per instance)."""
        return self.instance(instance_id).path(path)

    def host_pid(self, instance_id: str, pid: int) -> int | None:
        """This machine's pid of the process ``pid`` on the instance (each instance has its own PID
        namespace: its pid files and ``$$`` hold its own numbers), or None when the instance runs no
        such process. Tests look processes up in this machine's /proc, or signal them, through it."""
        return self.network.host_pid(instance_id, pid)

    def run_on_instance(
        self, instance_id: str, script: str, timeout: float = 120, cwd: str = "/"
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with bash on the instance outside Run Command, as cloud-init runs user data:
        as root, in the instance's file system, with the instance role (the agent's environment).
        The output is returned, not uploaded anywhere."""
        instance = self.instance(instance_id)
        folder = instance.home / "_user_data"
        folder.mkdir(exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.sh"
        path.write_text(script + "\n")
        return subprocess.run(
            instance.launch_command(path, cwd),
            cwd=instance.home,
            env={**self.instance_environment(), "HOME": str(instance.home)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def launch_unmanaged(
        self, count: int = 1, name: str = "unmanaged", tags: dict[str, str] | None = None
    ) -> list[str]:
        """EC2 instances with no SSM Agent: in moto, tagged, but never registered, so never targeted."""
        return list(self._run_instances(count, {"Name": name, **(tags or {})}))

    def _run_instances(self, count: int, tags: dict[str, str]) -> dict[str, str]:
        """RunInstances in the stand-in's subnet: instance id -> PrivateIpAddress."""
        response = self.client("ec2").run_instances(
            ImageId=AMI,
            MinCount=count,
            MaxCount=count,
            InstanceType="t3.micro",
            SubnetId=self.subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )
        return {str(item["InstanceId"]): str(item["PrivateIpAddress"]) for item in response["Instances"]}

    def create_auto_scaling_group(
        self, name: str, size: int, target_group_arns: list[str] | None = None, max_size: int | None = None
    ) -> list[str]:
        """An EC2 Auto Scaling group of ``size`` instances in the stand-in's subnet (launch template
        ``<name>-lt``), each a managed stand-in instance registered in ``target_group_arns`` once
        InService (``auto_scaling.py``). Returns its instance ids."""
        self.client("ec2").create_launch_template(
            LaunchTemplateName=f"{name}-lt", LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"}
        )
        self.client("autoscaling").create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": f"{name}-lt", "Version": "$Latest"},
            MinSize=0,
            MaxSize=max_size if max_size is not None else size + 4,
            DesiredCapacity=size,
            VPCZoneIdentifier=self.subnet_id,
            TargetGroupARNs=list(target_group_arns or []),
            Tags=[{"Key": "Name", "Value": name, "PropagateAtLaunch": True}],
        )
        return self.group_instances(name)

    def group_instances(self, name: str) -> list[str]:
        """The group's instances now, as DescribeAutoScalingGroups lists them."""
        group = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        return [str(i["InstanceId"]) for i in group["AutoScalingGroups"][0]["Instances"]]

    def suspended_processes(self, name: str) -> set[str]:
        """The group's SuspendedProcesses now."""
        group = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        return {str(p["ProcessName"]) for p in group["AutoScalingGroups"][0].get("SuspendedProcesses", [])}

    def create_resource_group(
        self, name: str, tag_filters: dict[str, list[str]], resource_types: list[str] | None = None
    ) -> str:
        """A tag-based resource group (``TAG_FILTERS_1_0``) in moto, for ``resource-groups:Name``
        targets: ``{"Service": ["api"], "Env": []}`` = Service is api AND Env has any value.
        Returns the group's ARN."""
        query = {
            "ResourceTypeFilters": resource_types or ["AWS::EC2::Instance"],
            "TagFilters": [{"Key": key, "Values": list(values)} for key, values in tag_filters.items()],
        }
        group = self.client("resource-groups").create_group(
            Name=name, ResourceQuery={"Type": "TAG_FILTERS_1_0", "Query": json.dumps(query)}
        )
        return str(group["Group"]["GroupArn"])

    def create_key(self, description: str) -> str:
        return str(self.client("kms").create_key(Description=description)["KeyMetadata"]["KeyId"])

    def put_secret(self, name: str, value: str, key_id: str) -> None:
        self.client("ssm").put_parameter(Name=name, Value=value, Type="SecureString", KeyId=key_id, Overwrite=True)

    def create_role(self, name: str) -> str:
        iam = self.client("iam")
        trust = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
            }
        )
        try:
            return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"])
        except iam.exceptions.EntityAlreadyExistsException:
            return str(iam.get_role(RoleName=name)["Role"]["Arn"])

    def flaky_proxy(self) -> FlakyProxy:
        """A TCP forwarder to this stand-in whose network can be broken on demand (stop() it after)."""
        host, port = self.endpoint.removeprefix("http://").split(":")
        return FlakyProxy(host, int(port))

    def create_user(self, name: str, policy: dict[str, Any]) -> dict[str, str]:
        """An IAM user with an inline policy; returns its access keys as boto3 keyword arguments."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}

    @contextlib.contextmanager
    def iam_enforced(self, instance_role_policy: dict[str, Any] | None = None) -> Iterator[None]:
        """Check signatures and IAM policies on every request while inside; the stand-in's own
        clients (tests, agent, instances) switch to an administrator user for the time. With
        ``instance_role_policy``, the instances (their commands and the agent's output uploads) get
        credentials of their own held to that policy instead: the instance role under test."""
        admin = self.create_user(
            f"standin-admin-{uuid.uuid4().hex[:6]}",
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
        )
        instances = (
            self.create_user(f"standin-instance-role-{uuid.uuid4().hex[:6]}", instance_role_policy)
            if instance_role_policy is not None
            else admin
        )
        saved = dict(self.admin_keys), dict(self.agent_keys)
        # an association's run still under way (an earlier test's UpdateAssociation) signs with the keys it
        # took; enforced under it, they fail in its thread (AuthFailure): it ends first
        self.associations.wait_idle(30)
        self.admin_keys, self.agent_keys = dict(admin), dict(instances)
        moto_bridge.set_iam_enforcement(True)
        try:
            yield
        finally:
            moto_bridge.set_iam_enforcement(False)
            self.admin_keys, self.agent_keys = saved

    @contextlib.contextmanager
    def short_sessions(self, seconds: int) -> Iterator[None]:
        """STS role sessions issued while inside last at most ``seconds`` (AWS's shortest is 900 s);
        requests signed with an expired one are refused, as always."""
        moto_bridge.set_session_seconds(seconds)
        try:
            yield
        finally:
            moto_bridge.set_session_seconds(None)

    def temporary_keys(self, role_name: str = "ci-temporary") -> dict[str, str]:
        """Temporary keys of a role session (what a CI variable AWS_SESSION_TOKEN holds), as pipe
        environment variables; end them with ``expire_session``."""
        credentials = self.client("sts").assume_role(
            RoleArn=self.create_role(role_name), RoleSessionName=role_name, DurationSeconds=3600
        )["Credentials"]
        return {
            "AWS_ACCESS_KEY_ID": str(credentials["AccessKeyId"]),
            "AWS_SECRET_ACCESS_KEY": str(credentials["SecretAccessKey"]),
            "AWS_SESSION_TOKEN": str(credentials["SessionToken"]),
        }

    def expire_session(self, access_key_id: str) -> None:
        """The STS session of ``access_key_id`` ends now: every request signed with it is refused."""
        if not moto_bridge.expire_session(access_key_id):
            raise KeyError(access_key_id)

    # --- load balancing and alarms -----------------------------------------------------------------
    @property
    def elb_time_scale(self) -> float:
        """How fast ELB's clock runs: 0.1 makes a 5-s health-check interval last 0.5 s and a 300-s
        deregistration delay 30 s. What AWS reports (intervals, attributes) stays unscaled."""
        return self.load_balancer.time_scale

    @elb_time_scale.setter
    def elb_time_scale(self, value: float) -> None:
        self.load_balancer.time_scale = value

    def create_target_group(
        self,
        name: str,
        instance_ids: list[str],
        *,
        deregistration_delay: int = 300,
        interval: int = 5,
        healthy_threshold: int = 2,
        unhealthy_threshold: int = 2,
        port: int = 3000,
        health_check_path: str = "/health",
        health_check_port: int | None = None,
        load_balancer: str | None = None,
        target_type: str = "instance",
    ) -> str:
        """An HTTP target group (instance targets) in the default VPC, forwarded to by a listener of
        the Application Load Balancer ``load_balancer`` (created when missing; default: named after
        the group), with ``instance_ids`` registered through RegisterTargets (on the group's port; by their
        private IP address when ``target_type`` is ``ip``).
        Returns its ARN. Health checks: ``GET <health_check_path>`` on ``health_check_port`` (default:
        the traffic port), 200 expected (the ALB default)."""
        ec2, elbv2 = self.client("ec2"), self.client("elbv2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        group = elbv2.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=port,
            VpcId=vpc,
            TargetType=target_type,
            HealthCheckIntervalSeconds=interval,
            HealthCheckTimeoutSeconds=max(2, min(5, interval - 1)),  # ALB: the timeout must be under the interval
            HealthyThresholdCount=healthy_threshold,
            UnhealthyThresholdCount=unhealthy_threshold,
            HealthCheckPath=health_check_path,
            HealthCheckPort=str(health_check_port or "traffic-port"),
        )["TargetGroups"][0]
        arn = str(group["TargetGroupArn"])
        elbv2.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay)}],
        )
        balancer = self._load_balancer_arn(load_balancer or f"{name}-lb", vpc)
        listeners = elbv2.describe_listeners(LoadBalancerArn=balancer)["Listeners"]
        elbv2.create_listener(
            LoadBalancerArn=balancer,
            Protocol="HTTP",
            Port=80 + len(listeners),
            DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
        )
        if instance_ids:
            ids = [self._address(i) for i in instance_ids] if target_type == "ip" else instance_ids
            elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in ids])
        return arn

    def _load_balancer_arn(self, name: str, vpc: str) -> str:
        elbv2 = self.client("elbv2")
        try:
            return str(elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]["LoadBalancerArn"])
        except elbv2.exceptions.LoadBalancerNotFoundException:
            pass
        subnets = self.client("ec2").describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        return str(
            elbv2.create_load_balancer(
                Name=name, Subnets=[s["SubnetId"] for s in subnets[:2]], Type="application", Scheme="internal"
            )["LoadBalancers"][0]["LoadBalancerArn"]
        )

    def target_states(self, target_group_arn: str) -> dict[str, str]:
        """Instance id -> target State, for every target DescribeTargetHealth lists (draining included;
        an instance registered on several ports: its first registration, see ``port_states``)."""
        return self.load_balancer.states(target_group_arn)

    def port_states(self, target_group_arn: str) -> dict[tuple[str, int], str]:
        """(Instance id, port) -> target State, for every target DescribeTargetHealth lists."""
        return self.load_balancer.port_states(target_group_arn)

    def wait_target_states(self, target_group_arn: str, instance_ids: list[str], state: str, timeout: float) -> None:
        """Wait until every one of ``instance_ids`` is in ``state`` ("gone": no longer listed)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.target_states(target_group_arn)
            if all(states.get(i, "gone") == state for i in instance_ids):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not {state} after {timeout} s: {states}")
            time.sleep(0.02)

    def _address(self, instance_id: str) -> str:
        instance = self.fleet.get(instance_id)
        if instance is None:
            raise KeyError(instance_id)
        return instance.address

    def address_of(self, instance_id: str) -> str | None:
        """The instance's private IP once its network exists (before its first command nothing can
        listen there), else None: what the load balancer's health checks and requests go to."""
        instance = self.fleet.get(instance_id) or self.fleet.by_address(instance_id)  # an ip group's target
        return instance.address if instance is not None and instance.network_up else None

    def app_up(self, instance_id: str, up: bool = True, release: str = "v1") -> None:
        """Start the users' app (the Node.js fixture, answering ``release``) on the instance outside
        pm2 and wait until it answers, or stop it gracefully (``instance_app.py``): what a machine
        image or an earlier deploy left running, for tests of the rollout's mechanics."""
        if up:
            instance_app.install(self.instance_path(instance_id, instance_app.APP_DIR), release)
        done = self.run_on_instance(instance_id, f"{instance_app.APP_CTL} {'start' if up else 'stop'}")
        if done.returncode != 0:
            raise RuntimeError(f"{instance_app.APP_CTL} on {instance_id} failed: {done.stderr.strip()}")

    def traffic(self, target_group_arn: str, **options: Any) -> LoadGenerator:
        """Real HTTP requests through the group's load balancer (``load_generator.py``: new and
        keep-alive connections, bounded in time and count); use it as a context manager."""
        return LoadGenerator(self.data_plane.url(target_group_arn), **{"duration": 600.0, **options})

    def create_alarm(self, name: str) -> None:
        """A metric alarm in CloudWatch (state OK until ``set_alarm``)."""
        self.client("cloudwatch").put_metric_alarm(
            AlarmName=name,
            MetricName="HTTPCode_Target_5XX_Count",
            Namespace="AWS/ApplicationELB",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )

    def set_alarm(self, name: str, state: str, reason: str = "test") -> None:
        """SetAlarmState: ``state`` is OK, ALARM or INSUFFICIENT_DATA."""
        self.client("cloudwatch").set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)

    # --- observations ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def requests_seen(self, callback: Callable[[str, dict[str, Any]], None]) -> Iterator[None]:
        """``callback(action, request)`` for each request the stand-in's services check (SendCommand,
        PutParameter, ...), as it arrives and before it is served, while the block runs."""
        service = self.service
        original = type(service).before_request

        def before_request(action: str, caller: str, request: dict[str, Any]) -> None:
            callback(action, request)
            original(service, action, caller, request)

        service.before_request = before_request  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            del service.before_request

    def sent_commands(self) -> list[SentCommand]:
        return list(self.service.sent.values())

    def sent_command(self, command_id: str) -> SentCommand:
        return self.service.sent[command_id]

    def calls_snapshot(self, include_instances: bool = True) -> collections.Counter[str]:
        """A copy of the control-plane call counts (see ``RunCommandService.calls``), to diff:
        ``after - before``. ``include_instances=False`` leaves out calls made from the instances
        (agent uploads, the AWS CLI in scripts): what the pipe and the tests themselves called."""
        return self.service.calls_snapshot(include_instances)

    @property
    def last_call_at(self) -> float:
        """When (``time.time()``) the last control-plane call not made from an instance arrived:
        the pipe's, or the test's own."""
        return self.service.last_call_at

    def issued_credentials(self) -> list[tuple[str, str, str]]:
        """Every STS role session's (access key, secret key, session token): must never be printed."""
        return moto_bridge.issued_credentials()
