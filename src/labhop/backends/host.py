"""The server runs on the host we ssh into, detached from the connection."""

from __future__ import annotations

from labhop import gpus
from labhop.backends.base import Backend, Health, Server, Status, entry_kinds, run_script
from labhop.errors import ServerExitedError, with_log
from labhop.model import APP_TABLE
from labhop.remote import gpu_query, jupyter, protocol, scripts
from labhop.remote.protocol import ProtocolError


class HostBackend(Backend):
    """The server runs on the host we ssh into, detached from the connection."""

    kind = "host"
    entry_shell = "host_entry.sh"

    def launch(self, request: jupyter.LaunchRequest) -> Server:
        # A TCP server may take up to port_wait to listen on the port it chose.
        fields = self._run(scripts.launch_script(request, kinds=entry_kinds()),
                           "starting Jupyter", timeout=request.port_wait + 120)
        if fields.get("exited") == "1":
            label = APP_TABLE[request.app].label
            raise ServerExitedError(**with_log(
                f"{label} exited during start-up on {self.conn.target.host}",
                self.status(request.name, with_log=True).log))
        if not fields.get("pid") or not fields.get("endpoint"):
            raise ProtocolError(
                "the remote start script printed no server details; run with --debug to see "
                "what the remote shell printed"
            )
        return Server(
            name=request.name,
            token=fields.get("token"),
            endpoint=fields.get("endpoint"),
            pid=fields.get("pid"),
            node=fields.get("node"),
            existing=fields.get("existing") == "1",
            open_path=fields.get("open_path"),
            open_kind=fields.get("open_kind"),
        )

    def status(self, name: str, *, with_log: bool = False) -> Status:
        output = self._run(scripts.status_script(name, with_log=with_log), "checking the server")
        listening = output.get("listening")
        return Status(
            known=output.get("known") == "1",
            alive=output.get("alive") == "1",
            listening=None if listening == "" else listening == "1",
            log=output.log,
        )

    def stop(self, name: str, *, expect_id: str = "") -> protocol.ScriptOutput:
        script = scripts.stop_script(name, expect_id=expect_id)
        return self._run(script, "stopping the server", timeout=90)

    def health(self, server: Server) -> Health:
        status = self.status(server.name)
        return Health(alive=status.alive, known=status.known)

    def gpus(self) -> gpus.GpuReport:
        """What nvidia-smi on the host says now, with each GPU process's user and server."""
        stdout = run_script(self.conn, gpu_query.query_script(), "querying the GPUs",
                            timeout=60)
        return gpu_query.parse_report(stdout)
