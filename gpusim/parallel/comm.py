"""The communicator a run uses: MPI's world when the process was launched by ``mpiexec``/``srun``,
otherwise a one-rank stand-in, so a plain ``gpusim run`` never imports or initialises MPI.

Only this module imports mpi4py. Every message gpusim sends is a NumPy buffer (upper-case mpi4py
calls): nothing is pickled between ranks.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["SerialComm", "launched_by_mpi", "world"]

#: set by MPICH/Hydra, Open MPI, PMIx and Slurm in the processes they launch
_LAUNCH_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    return any(k in os.environ for k in _LAUNCH_ENV)


class SerialComm:
    """One rank, no MPI: the collective calls gpusim uses, done locally."""

    rank = 0
    size = 1
    local_rank = 0  # this rank's number among the ranks on its node (the GPU it takes)
    local_size = 1  # the ranks on its node
    is_mpi = False

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        pass

    def allreduce_sum(self, value):
        return value

    def allreduce_max(self, value):
        return value

    def bcast_json(self, value, root: int = 0):
        return value

    def sendrecv(self, send: np.ndarray, dest, recv: np.ndarray, source, tag: int) -> None:
        if dest is not None or source is not None:
            raise ValueError("a one-rank run has no neighbours to exchange with")

    def send(self, buf: np.ndarray, dest: int, tag: int) -> None:
        raise ValueError("a one-rank run has no other rank to send to")

    def recv(self, buf: np.ndarray, source: int, tag: int) -> None:
        raise ValueError("a one-rank run has no other rank to receive from")

    def alltoall(self, send: np.ndarray) -> np.ndarray:
        a = np.asarray(send)
        if a.shape[:1] != (1,):
            raise ValueError(f"alltoall on one rank takes one entry per rank (shape (1, ...)); got {a.shape}")
        return a.copy()

    def exchange(self, sends: dict, recvs: dict, tag: int) -> None:
        if sends or recvs:
            raise ValueError("a one-rank run has no other rank to exchange with")


class MPIComm:
    """mpi4py's COMM_WORLD behind the same small interface (buffer messages only)."""

    is_mpi = True

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self._node = None  # (local rank, local size), from MPI's shared-memory split when first asked

    def _node_split(self) -> tuple:
        if self._node is None:
            node = self._comm.Split_type(self._MPI.COMM_TYPE_SHARED, key=self.rank)
            self._node = (node.Get_rank(), node.Get_size())
            node.Free()
        return self._node

    @property
    def local_rank(self) -> int:
        """This rank's number among the ranks on its node (the GPU it takes). Collective on first use."""
        return self._node_split()[0]

    @property
    def local_size(self) -> int:
        """The number of ranks on this rank's node. Collective on first use."""
        return self._node_split()[1]

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job (a rank that fails would otherwise leave the others waiting)."""
        self._comm.Abort(code)

    def _allreduce(self, value, op):
        a = np.asarray(value)
        out = np.empty_like(a)
        self._comm.Allreduce(np.ascontiguousarray(a), out, op=op)
        return out if a.shape else out[()]

    def allreduce_sum(self, value):
        """Sum over ranks. For integers exact; for floats the order is MPI's, so gpusim sums floats
        only where the result is not compared bitwise (or reduces integers/fixed point instead)."""
        return self._allreduce(value, self._MPI.SUM)

    def allreduce_max(self, value):
        return self._allreduce(value, self._MPI.MAX)

    def bcast_json(self, value, root: int = 0):
        """Broadcast a JSON-able value (as UTF-8 bytes: no pickle)."""
        import json

        data = json.dumps(value).encode() if self.rank == root else b""
        n = np.array([len(data)], np.int64)
        self._comm.Bcast(n, root=root)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self._comm.Bcast(buf, root=root)
        return json.loads(buf.tobytes().decode())

    def sendrecv(self, send: np.ndarray, dest, recv: np.ndarray, source, tag: int) -> None:
        null = self._MPI.PROC_NULL
        self._comm.Sendrecv(send, dest=null if dest is None else dest, sendtag=tag, recvbuf=recv,
                            source=null if source is None else source, recvtag=tag)

    def send(self, buf: np.ndarray, dest: int, tag: int) -> None:
        self._comm.Send(buf, dest=dest, tag=tag)

    def recv(self, buf: np.ndarray, source: int, tag: int) -> None:
        self._comm.Recv(buf, source=source, tag=tag)

    def alltoall(self, send: np.ndarray) -> np.ndarray:
        """``send[r]`` (one entry, or one row, per rank) goes to rank r; returns what each rank sent
        this one, in rank order."""
        a = np.ascontiguousarray(send)
        out = np.empty_like(a)
        self._comm.Alltoall(a, out)
        return out

    def exchange(self, sends: dict, recvs: dict, tag: int) -> None:
        """Point-to-point messages in both directions at once: ``sends`` {dest: buffer} and ``recvs``
        {source: buffer of the exact size}, all posted non-blocking and waited for together (any
        pattern of peers, no ordering to deadlock on)."""
        reqs = [self._comm.Irecv(b, source=s, tag=tag) for s, b in recvs.items()]
        reqs += [self._comm.Isend(b, dest=d, tag=tag) for d, b in sends.items()]
        self._MPI.Request.Waitall(reqs)


def world():
    """MPI's COMM_WORLD when launched by an MPI launcher (mpi4py needed: ``pip install -e ".[mpi]"``),
    else a :class:`SerialComm`."""
    if not launched_by_mpi():
        return SerialComm()
    try:
        return MPIComm()
    except ImportError:
        raise RuntimeError("this process was started by an MPI launcher but mpi4py is not installed: "
                           "pip install -e \".[mpi]\" (or mpi4py built against your cluster's MPI)") from None
