"""Runs one invocation the way the SSM Agent would: a real local process per instance.

The process runs as the agent does on AWS: as root, with the agent's environment
(``StandIn.instance_environment``: the instance role, the AWS CLI), on the instance: in its network
namespace (``hosts.py``), its PID namespace and its one mount namespace, shared by all its commands
as the host's is on AWS (``pid_namespace.py``), where the instance's folder holds /home, /root, /tmp,
/srv and /opt and /proc is its PID namespace's (``isolation.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from standin.cloudwatch import DEFAULT_LOG_GROUP, LogsSink, StreamUploader
from standin.fleet import DELIVER, NEVER, FakeInstance
from standin.moto_bridge import MotoCommand

S3_PLUGIN_FOLDER = "awsrunShellScript/0.awsrunShellScript"
STDOUT_FIELD_LIMIT = 24000
STDERR_FIELD_LIMIT = 8000
PLUGIN = "aws-runShellScript"
DEFAULT_EXECUTION_TIMEOUT = 3600
POLL = 0.02
FINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})

Report = Callable[[str, dict[str, Any]], None]
Done = Callable[["InvocationRun", str], None]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _elapsed(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


class InvocationRun:
    """One instance's invocation of one command, run in a thread once dispatched.

    Status changes go through ``report`` (the command's ``Rollout``), and ``on_done`` is told the
    final StatusDetails, from this thread, after the final status is recorded. A lost agent
    reports nothing more, so ``on_done`` is never called for it.
    """

    def __init__(
        self,
        command: MotoCommand,
        instance_id: str,
        instance: FakeInstance | None,
        environment: dict[str, str],
        logs_sink: Callable[[], LogsSink],
        upload_interval: float,
    ) -> None:
        self.command = command
        self.instance_id = instance_id
        self.instance = instance
        self._environment = environment
        self._logs_sink = logs_sink
        self._upload_interval = upload_interval
        self._report: Report = lambda instance_id, fields: command.update_invocation(instance_id, **fields)
        self._on_done: Done | None = None
        self.final_details: str | None = None
        self._cancel = threading.Event()
        self._lost = threading.Event()
        # set whenever the running process may have to stop waiting: it exited, it was cancelled, the
        # agent was lost (``_wait`` sleeps on it instead of polling)
        self._stirred = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.killed = False
        self.interrupted = False  # lost while its process ran: ``resume`` runs it again
        self.stdout = ""
        self.stderr = ""
        self.cloudwatch_refused = False
        self.thread = threading.Thread(target=self._run, name=f"agent-{instance_id}", daemon=True)

    def bind(self, report: Report, on_done: Done) -> None:
        self._report, self._on_done = report, on_done

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self._cancel.set()
        self._stirred.set()

    def lose(self) -> None:
        """The agent dies with the instance: the process is killed and nothing more is reported."""
        self._lost.set()
        self._stirred.set()

    def let_go(self, timeout: float) -> None:
        """After ``lose``: wait (up to ``timeout``) until the lost agent has killed what it ran and stopped
        reporting, so that the rest of the instance's processes can be killed without the run seeing its
        process exit (it would report that exit)."""
        if self._lost.is_set() and self.process is not None:
            self.thread.join(timeout)

    def resume(self) -> None:
        """The agent is back after the instance rebooted (or the agent restarted) with this invocation
        begun and not finished: AWS's agent resubmits, as it starts, the documents of its ``current`` folder
        (``EngineProcessor.InitialProcessing`` -> ``processInProgressDocuments``: each begun and unfinished
        document less than 48 hours old, up to ``CommandRetryLimit`` runs), before it reads new messages,
        so the command runs again from the start, with the same command id (``SSM_COMMAND_ID``). A
        CancelCommand sent while the agent was away reaches it only after that ("There is no guarantee that
        the command will be terminated", CancelCommand): the stand-in lets the run go on (the worst case).
        Nothing happens for an invocation that was not lost running."""
        if not self._lost.is_set():
            return
        if self.process is None and not self.interrupted:  # lost before it ran: it still waits to be delivered
            self._lost.clear()
            return
        self.thread.join()  # the agent that was lost has let go of its process
        if not self.interrupted or self.instance is None:
            return
        self.interrupted = False
        self._lost.clear()
        self._cancel.clear()
        self._stirred.clear()
        self.killed = False
        instance = self.instance
        self.thread = threading.Thread(
            target=self._run, args=(lambda: self._execute(instance),), name=f"agent-{self.instance_id}", daemon=True
        )
        self.thread.start()

    def _update(self, **fields: Any) -> None:
        self._report(self.instance_id, fields)
        if fields.get("Status") in FINAL:
            self.final_details = str(fields.get("StatusDetails", fields["Status"]))

    def _run(self, step: Callable[[], None] | None = None) -> None:
        try:
            (step or self._deliver)()
        except Exception as error:  # a harness bug must not hold a MaxConcurrency slot forever
            if self.final_details is None:
                self._update(
                    Status="Failed",
                    StatusDetails="Failed",
                    ResponseCode=-1,
                    StandardErrorContent=f"stand-in agent error: {error!r}",
                )
        if self.final_details is not None and self._on_done is not None:
            self._on_done(self, self.final_details)

    def _deliver(self) -> None:
        instance = self.instance
        if instance is None or instance.delivery not in (DELIVER, NEVER):
            time.sleep(instance.delivery_delay if instance else 0.05)
            self._update(Status="Failed", StatusDetails="Undeliverable", ResponseCode=-1)
            return
        if instance.delivery == NEVER:
            if self._cancel.wait(self._total_timeout() * instance.delivery_time_scale):
                self._update(Status="Cancelled", StatusDetails="Cancelled", ResponseCode=-1)
            else:
                self._update(Status="TimedOut", StatusDetails="DeliveryTimedOut", ResponseCode=-1)
            return
        if not self._await_online(instance):
            return
        if self._cancel.wait(instance.delivery_delay):
            self._update(Status="Cancelled", StatusDetails="Cancelled", ResponseCode=-1)
            return
        self._execute(instance)

    def _await_online(self, instance: FakeInstance) -> bool:
        """An agent that is offline (ConnectionLost) picks nothing up: the invocation stays Pending until
        the agent is back, and turns DeliveryTimedOut once the total timeout passed without it (AWS,
        "Understanding command statuses": Pending is a command "not yet sent to the managed node or not
        received by SSM Agent"). To a stopped node it is Delayed: "The system attempted to send the command to
        the target, but the target wasn't available ... because the node was stopped ... The system will try to
        send the command again" (GetCommandInvocation, StatusDetails); delivered if the node starts in time.
        False when it ended here (Cancelled or DeliveryTimedOut)."""
        deadline = time.monotonic() + self._total_timeout() * instance.delivery_time_scale
        delayed = False
        while instance.ping_status != "Online":
            if instance.stopped and not delayed:  # SSM tried to send it; the node is stopped: it tries again
                self._update(Status="Delayed", StatusDetails="Delayed")
                delayed = True
            if self._cancel.wait(POLL):
                self._update(Status="Cancelled", StatusDetails="Cancelled", ResponseCode=-1)
                return False
            if time.monotonic() >= deadline:
                self._update(Status="TimedOut", StatusDetails="DeliveryTimedOut", ResponseCode=-1)
                return False
        return True

    def _total_timeout(self) -> int:
        """When an undelivered invocation turns DeliveryTimedOut: AWS documents a Pending invocation
        that the agent has not received once Timeout (seconds) plus Execution timeout have passed as
        Delivery Timed Out (Run Command, "Understanding command statuses"). Counted from dispatch."""
        return self.command.delivery_timeout + self._execution_timeout()

    def _execution_timeout(self) -> int:
        return int((self.command.parameters.get("executionTimeout") or [str(DEFAULT_EXECUTION_TIMEOUT)])[0])

    def _execute(self, instance: FakeInstance) -> None:
        started = _now()
        begin = time.monotonic()
        self._update(Status="InProgress", StatusDetails="InProgress", ExecutionStartDateTime=started.isoformat())
        parameters = self.command.parameters
        folder = instance.home / "_commands" / self.command.command_id
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "_script.sh"
        body = self.command.shell_script()
        if body is None:
            self.stderr = f"stand-in: {self.command.document_name} cannot run here (only shell documents do)\n"
            uploaders = self._uploaders()
            if "stderr" in uploaders:
                uploaders["stderr"].write(self.stderr.encode())
            self._finish(started, begin, "Failed", "Failed", 1, uploaders)
            return
        script.write_text(body + "\n")
        cwd = (parameters.get("workingDirectory") or [""])[0] or str(instance.home)
        timeout = self._execution_timeout()
        uploaders = self._uploaders()
        try:
            self.process = subprocess.Popen(
                instance.launch_command(script, cwd),
                cwd=instance.home,  # the launcher enters ``cwd`` once the instance's roots are mapped
                env=self._process_environment(instance),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, RuntimeError) as error:  # e.g. unshare is gone, the network could not be made
            self.stderr = f"failed to run commands: {error}\n"
            if "stderr" in uploaders:
                uploaders["stderr"].write(self.stderr.encode())
            self._finish(started, begin, "Failed", "Failed", 1, uploaders)
            return
        out_stream, err_stream = self.process.stdout, self.process.stderr
        assert out_stream is not None and err_stream is not None
        readers = [
            threading.Thread(target=self._read, args=(out_stream, "stdout", uploaders), daemon=True),
            threading.Thread(target=self._read, args=(err_stream, "stderr", uploaders), daemon=True),
        ]
        for reader in readers:
            reader.start()
        outcome = self._wait(timeout)
        for reader in readers:
            reader.join()
        if outcome == "lost":
            for uploader in uploaders.values():
                uploader.stop()
            self.interrupted = True
            return  # a dead agent reports nothing: the invocation stays InProgress
        if outcome == "cancelled":
            self._finish(started, begin, "Cancelled", "Cancelled", -1, uploaders)
        elif outcome == "timeout":
            self._finish(started, begin, "TimedOut", "ExecutionTimedOut", -1, uploaders)
        else:
            code = int(self.process.returncode)
            status = "Success" if code == 0 else "Failed"
            self._finish(started, begin, status, status, code, uploaders)

    def _process_environment(self, instance: FakeInstance) -> dict[str, str]:
        """The agent's environment plus what it sets per invocation (as AWS's agent does)."""
        return {
            **self._environment,
            "HOME": str(instance.home),  # AWS's agent sets none; the stand-in's tests tell instances apart by it
            "AWS_SSM_INSTANCE_ID": self.instance_id,
            "SSM_COMMAND_ID": self.command.command_id,
            "AWS_SSM_REGION_NAME": self._environment.get("AWS_DEFAULT_REGION", ""),
        }

    def _wait(self, timeout: int) -> str:
        """How the process ended: "exited", or killed here once "lost", "cancelled" or at "timeout".

        A thread blocks in ``wait()`` for the exit and stirs this one, which sleeps until something
        happens or the deadline passes: ``Popen.wait(timeout=...)`` polls waitpid every 0.5-50 ms, about
        5 ms of CPU per second of each running invocation (measured 2026-12-07)."""
        process = self.process
        assert process is not None
        deadline = time.monotonic() + timeout
        exited = threading.Event()

        def reap() -> None:
            process.wait()
            exited.set()
            self._stirred.set()

        threading.Thread(target=reap, name=f"reap-{self.instance_id}", daemon=True).start()
        while True:
            self._stirred.clear()  # each event is read below after the clear: none is missed
            if exited.is_set():
                return "exited"
            if self._lost.is_set():
                self._kill()
                return "lost"
            if self._cancel.is_set():
                self._kill()
                return "cancelled"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                return "timeout"
            self._stirred.wait(remaining)

    def _kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.killed = True

    def _read(self, stream: IO[bytes], name: str, uploaders: dict[str, StreamUploader]) -> None:
        """Copy the stream as the process writes it (the agent's output file; ``StreamUploader`` uploads it)."""
        chunks: list[bytes] = []
        for raw in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
            chunks.append(raw)
            if name in uploaders:
                uploaders[name].write(raw)
        stream.close()
        text = b"".join(chunks).decode("utf-8", errors="replace")
        if name == "stdout":
            self.stdout = text
        else:
            self.stderr = text

    def _uploaders(self) -> dict[str, StreamUploader]:
        config = self.command.cloudwatch_output
        if not config.get("CloudWatchOutputEnabled"):
            return {}
        if self.instance is not None and not self.instance.cloudwatch_writes:
            self.cloudwatch_refused = True  # the agent logs the AccessDeniedException and streams nothing
            return {}
        group = config.get("CloudWatchLogGroupName") or DEFAULT_LOG_GROUP
        sink = self._logs_sink()
        prefix = f"{self.command.command_id}/{self.instance_id}/{PLUGIN}"
        skew = self.instance.clock_skew if self.instance is not None else 0.0
        return {
            name: StreamUploader(sink, group, f"{prefix}/{name}", self._upload_interval, skew)
            for name in ("stdout", "stderr")
        }

    def _finish(
        self,
        started: datetime.datetime,
        begin: float,
        status: str,
        details: str,
        code: int,
        uploaders: dict[str, StreamUploader],
    ) -> None:
        for uploader in uploaders.values():
            uploader.end()
        for uploader in uploaders.values():
            uploader.wait()  # the agent waits for its upload (up to 60 ticks) before the status turns final
        bucket, prefix = self.command.s3_output
        if bucket:  # the agent's S3 layout: <prefix>/<command>/<instance>/<plugin>/<step>/stdout|stderr
            folder = "/".join(
                part
                for part in (prefix.strip("/"), self.command.command_id, self.instance_id, S3_PLUGIN_FOLDER)
                if part
            )
            sink = self._logs_sink()
            sink.put_object(bucket, f"{folder}/stdout", self.stdout)
            if self.stderr:
                sink.put_object(bucket, f"{folder}/stderr", self.stderr)
        self._update(
            Status=status,
            StatusDetails=details,
            ResponseCode=code,
            StandardOutputContent=self.stdout[:STDOUT_FIELD_LIMIT],
            StandardErrorContent=self.stderr[:STDERR_FIELD_LIMIT],
            ExecutionStartDateTime=started.isoformat(),
            ExecutionEndDateTime=_now().isoformat(),
            ExecutionElapsedTime=_elapsed(time.monotonic() - begin),
        )
