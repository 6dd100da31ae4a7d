"""In-process MPI ranks for tests: one thread per rank and a mailbox standing in for MPI, with the
calls of gpusim's communicator that the code under test makes (``exchange``, ``send``, ``recv``,
``sendrecv``, ``alltoall``, ``bcast_json``, ``allreduce_sum``, ``allreduce_max``). The real transport is tested under
``mpiexec`` (marker ``mpi``); these run the same code on every rank inside the default suite."""

from __future__ import annotations

import threading

import numpy as np


class _Shared:
    def __init__(self, size):
        self.box, self.cv = {}, threading.Condition()
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots = [None] * size


class ThreadComm:
    """One in-process rank of ``size``."""

    is_mpi = True

    def __init__(self, shared, rank, size):
        self._s, self.rank, self.size = shared, rank, size
        self.local_rank, self.local_size = rank, size  # one node

    def exchange(self, sends, recvs, tag):
        s = self._s
        with s.cv:
            for d, b in sends.items():
                s.box.setdefault((self.rank, d, tag), []).append(np.array(b, copy=True))
            s.cv.notify_all()
        for src, b in recvs.items():
            key = (src, self.rank, tag)
            with s.cv:
                if not s.cv.wait_for(lambda: key in s.box, timeout=30):
                    raise TimeoutError(f"rank {self.rank}: no message from {src} (tag {tag})")
                got = s.box[key].pop(0)  # in the order sent, as MPI's messages between two ranks
                if not s.box[key]:
                    del s.box[key]
            assert got.shape == b.shape and got.dtype == b.dtype, (got.shape, b.shape)
            b[...] = got

    def send(self, buf, dest, tag):
        self.exchange({dest: buf}, {}, tag)

    def sendrecv(self, send, dest, recv, source, tag):
        """MPI's Sendrecv; None for no partner (PROC_NULL)."""
        self.exchange({} if dest is None else {dest: send}, {} if source is None else {source: recv}, tag)

    def recv(self, buf, source, tag):
        self.exchange({}, {source: buf}, tag)

    def bcast_json(self, value, root=0):
        import json

        s = self._s
        if self.rank == root:
            s.slots[root] = json.dumps(value)
        s.barrier.wait()
        out = json.loads(s.slots[root])
        s.barrier.wait()
        return out

    def alltoall(self, send):
        s = self._s
        s.slots[self.rank] = np.array(send, copy=True)
        s.barrier.wait()
        out = np.stack([s.slots[r][self.rank] for r in range(self.size)])
        s.barrier.wait()
        return out

    def _allreduce(self, value, combine):
        s = self._s
        s.slots[self.rank] = np.asarray(value)
        s.barrier.wait()
        out = s.slots[0]
        for v in s.slots[1:]:
            out = combine(out, v)
        s.barrier.wait()  # everyone has read the slots before the next call refills them
        out = np.asarray(out, dtype=np.asarray(value).dtype)
        return out if out.shape else out[()]

    def allreduce_sum(self, value):
        return self._allreduce(value, np.add)

    def allreduce_max(self, value):
        return self._allreduce(value, np.maximum)


def run_ranks(size, work):
    """``work(comm)`` on ``size`` in-process ranks; their results in rank order (the first error is
    raised, and messages sent but never received fail)."""
    shared, out, errors = _Shared(size), [None] * size, []

    def one(r):
        try:
            out[r] = work(ThreadComm(shared, r, size))
        except BaseException as e:  # noqa: BLE001 - raised below on the test's thread
            errors.append(e)
            shared.barrier.abort()

    threads = [threading.Thread(target=one, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    assert not shared.box, "messages sent but never received"
    return out
