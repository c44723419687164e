"""The store against a dict model: random write/mkdir/rm/read/directory sequences
(some inside transactions) must agree on values, child lists and errors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as s
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xennet.abi.xs_wire import XENSTORE_PAYLOAD_MAX, XsType
from xennet.xenstore.client import XenstoreClient
from xennet.xenstore.errors import XenstoreError
from xennet.xenstore.server import XenstoredCore
from xennet.xenstore.wire import Message

ROOT = "/m"
components = s.lists(s.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)
paths = components.map(lambda p: ROOT + "/" + "/".join(p))
values = s.text(alphabet="xyz01", max_size=5)


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.xs = XenstoreClient.in_process(XenstoredCore(), 0)
        self.xs.mkdir(ROOT)
        # Insertion-ordered: xenstored lists children in creation order.
        self.model: dict[str, str] = {ROOT: ""}

    def teardown(self) -> None:
        self.xs.close()

    def _model_write(self, path: str, value: str) -> None:
        missing = []
        p = path
        while p not in self.model:
            missing.append(p)
            p = parent(p)
        for q in reversed(missing):
            self.model[q] = ""
        self.model[path] = value

    def _model_rm(self, path: str) -> None:
        for q in [q for q in self.model if q == path or q.startswith(path + "/")]:
            del self.model[q]

    def _children(self, path: str) -> list[str]:
        return [q.rsplit("/", 1)[1] for q in self.model if parent(q) == path and q != path]

    @rule(path=paths, value=values)
    def write(self, path: str, value: str) -> None:
        self.xs.write(path, value)
        self._model_write(path, value)

    @rule(path=paths)
    def mkdir(self, path: str) -> None:
        self.xs.mkdir(path)
        if path not in self.model:
            self._model_write(path, "")

    @rule(path=paths)
    def rm(self, path: str) -> None:
        if path in self.model or parent(path) in self.model:
            self.xs.rm(path)
            self._model_rm(path)
        else:
            try:
                self.xs.rm(path)
            except XenstoreError as e:
                assert e.errno_name == "ENOENT"
            else:
                raise AssertionError(f"rm {path} with no parent succeeded")

    @rule(writes=s.lists(s.tuples(paths, values), min_size=1, max_size=3), commit=s.booleans())
    def transaction(self, writes: list[tuple[str, str]], commit: bool) -> None:
        t = self.xs.transaction()
        for path, value in writes:
            t.write(path, value)
        if commit:
            assert t.commit()  # nothing runs concurrently: never a conflict
            for path, value in writes:
                self._model_write(path, value)
        else:
            t.abort()

    @rule(path=paths)
    def read(self, path: str) -> None:
        assert self.xs.try_read(path) == self.model.get(path)

    @rule(path=paths)
    def directory(self, path: str) -> None:
        if path in self.model:
            assert self.xs.directory(path) == self._children(path)
        else:
            try:
                self.xs.directory(path)
            except XenstoreError as e:
                assert e.errno_name == "ENOENT"
            else:
                raise AssertionError(f"directory of missing {path} succeeded")

    @invariant()
    def root_listing_matches(self) -> None:
        assert self.xs.directory(ROOT) == self._children(ROOT)


StoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStoreModel = StoreModel.TestCase


# ---------------------------------------------------------------------------- robustness

_fragments = s.sampled_from(
    [
        b"/",
        b"/a",
        b"/a/b",
        b"rel",
        b"@releaseDomain",
        b"@x",
        b"T",
        b"F",
        b"0",
        b"1",
        b"99999",
        b"n0",
        b"r1",
        b"b2",
        b"zz",
        b"",
        b"\xff",
        b"//",
        b"-1",
        b"4096",
    ]
)
_strings = s.lists(_fragments, min_size=1, max_size=2).map(b"".join)  # e.g. b"@x\xff"
_payloads = s.one_of(
    s.binary(max_size=64),
    s.lists(_strings, max_size=4).map(lambda parts: b"\0".join(parts) + b"\0"),
)


@settings(max_examples=300, deadline=None)
@given(
    s.lists(
        s.tuples(s.integers(0, 3), s.integers(0, 25), s.integers(0, 3), _payloads),
        min_size=1,
        max_size=25,
    )
)
def test_core_never_raises_and_answers_every_request(
    requests: list[tuple[int, int, int, bytes]],
) -> None:
    core = XenstoredCore()
    conns = {0: 0, 1: 1, 2: 2, 3: 0}  # conn id -> domid
    for conn, domid in conns.items():
        core.connect(conn, domid)
    released: set[int] = set()
    for req_id, (conn, type_, tx, payload) in enumerate(requests, start=1):
        out = core.handle(conn, Message(type_, req_id, tx, payload))
        replies = [m for c, m in out if c == conn and m.type != XsType.XS_WATCH_EVENT]
        if conns[conn] in released:
            # A released domain's connections are ignored until the daemon drops them.
            assert out == []
        else:
            assert len(replies) == 1
            assert replies[0].req_id == req_id
            assert replies[0].type in (type_, XsType.XS_ERROR)
            assert len(replies[0].payload) <= XENSTORE_PAYLOAD_MAX
        released |= {e.domid for e in core.take_domain_events() if e.kind == "release"}
        for _, m in out:
            if m.type == XsType.XS_WATCH_EVENT:
                assert m.req_id == 0 and m.payload.count(b"\0") == 2
