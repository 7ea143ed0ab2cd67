"""The SMTP hand-off (issue 11): pipelined RCPTs, one connection per row, parallel ones.

Against the real Postfix (delivering into Dovecot). To see that the envelope is pipelined,
the bot talks to Postfix through a relay of the test's own (``Holding``) that holds back
Postfix's replies in each transaction until the client has sent its whole envelope (MAIL
and all RCPTs). A client that waits for each reply, as aiosmtplib does, gets its replies
only when the relay gives up waiting, which the relay counts: a pipelining client never
makes it wait.

The retry semantics the email bridge builds on (4xx per recipient for later, 5xx refused,
a refused DATA or MAIL fails the transaction) go through the pipelined path to an aiosmtpd
server that offers PIPELINING and answers as each test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from servers import MailStack, TestCA

from secir_bot.bridges.email import smtpsend
from secir_bot.sandbox.operators import wait_until

USERS = tuple(f"{n}@test.example" for n in ("alice", "bob", "carol", "dave", "mallory", "list"))
SENDER = "list@test.example"
HOLD = 1.0  # seconds the relay waits for a complete envelope before it gives up


class Relay:
    """A TCP relay on a free loopback port to a server's ``port``; ``_relay`` serves each
    connection, and ``connections`` counts them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Holding(Relay):
    """A TCP relay to Postfix that holds Postfix's replies until the envelope is complete.

    ``expect`` is the number of RCPT lines of each transaction. Counts connections,
    transactions, and the transactions whose envelope did not come in one go (``waited``).
    """

    def __init__(self, port: int, expect: int) -> None:
        super().__init__(port)
        self.expect = expect
        self.transactions = 0
        self.waited = 0

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.port)
        complete = asyncio.Event()
        complete.set()

        async def client_to_server() -> None:
            rcpts = 0
            in_data = False
            while line := await c_reader.readline():
                if in_data:
                    in_data = line != b".\r\n"
                elif line.upper().startswith(b"MAIL FROM:"):
                    self.transactions += 1
                    rcpts = 0
                    complete.clear()
                elif line.upper().startswith(b"RCPT TO:"):
                    rcpts += 1
                    if rcpts == self.expect:
                        complete.set()
                elif line.upper().startswith(b"DATA"):
                    in_data = True
                s_writer.write(line)
                await s_writer.drain()
            s_writer.close()

        async def server_to_client() -> None:
            while line := await s_reader.readline():
                if not complete.is_set():
                    try:
                        await asyncio.wait_for(complete.wait(), HOLD)
                    except TimeoutError:
                        self.waited += 1
                        complete.set()
                c_writer.write(line)
                await c_writer.drain()
            c_writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(client_to_server(), server_to_client())


def _mail(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = SENDER
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@test.example>"
    msg.set_content("one line\n.a line that starts with a dot\n")
    return bytes(msg)


def _arrived(stack: MailStack, address: str, subject: str) -> list[bytes]:
    local, _, domain = address.partition("@")
    found = []
    for box in ("new", "cur"):
        folder = stack.dovecot_dir / "mail" / domain / local / "Maildir" / box
        for path in folder.glob("*") if folder.is_dir() else ():
            data = path.read_bytes()
            if subject.encode() in data:
                found.append(data)
    return found


async def _all_arrived(stack: MailStack, recipients: Sequence[str], subject: str) -> None:
    for address in recipients:
        try:
            mails = await wait_until(
                lambda a=address: _arrived(stack, a, subject), 10, f"the mail in {address}'s box"
            )
        except TimeoutError:
            pytest.fail(f"no mail for {address}:\n{stack.logs()}")
        assert len(mails) == 1, f"{address} got {len(mails)} copies"
        assert b"\n.a line that starts with a dot" in mails[0]  # dot-stuffing undone


@pytest_asyncio.fixture
async def holding(mail_stack: MailStack) -> AsyncIterator[tuple[Holding, int]]:
    relay = Holding(mail_stack.smtp_port, expect=3)
    port = await relay.start()
    yield relay, port
    await relay.stop()


def _opener(port: int, **kwargs: Any) -> Any:
    async def open_session() -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, **kwargs)
        await smtp.connect()
        return smtp

    return open_session


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.errors: dict[str, aiosmtplib.SMTPResponse] = {}

    def __call__(self, batch: Sequence[str], errors: Mapping[str, aiosmtplib.SMTPResponse]) -> None:
        self.batches.append(list(batch))
        self.errors.update(errors)


async def test_rcpts_are_pipelined_to_postfix_over_one_connection(
    mail_stack: MailStack, holding: tuple[Holding, int]
) -> None:
    relay, port = holding
    subject = f"pipelined {uuid.uuid4().hex}"
    record = Recorder()

    await smtpsend.send(
        _opener(port, start_tls=False), SENDER, USERS, _mail(subject), record, max_recipients=3
    )

    assert record.batches == [list(USERS[:3]), list(USERS[3:])] and not record.errors
    assert relay.connections == 1  # one connection for both batches of the row
    assert relay.transactions == 2
    assert relay.waited == 0  # every envelope came in one go: pipelined
    await _all_arrived(mail_stack, USERS, subject)


async def test_the_relay_sees_a_client_that_waits_for_each_reply(
    mail_stack: MailStack, holding: tuple[Holding, int]
) -> None:
    """The control: with pipelining off, each envelope had to be waited for."""
    relay, port = holding
    subject = f"one by one {uuid.uuid4().hex}"

    await smtpsend.send(
        _opener(port, start_tls=False),
        SENDER,
        USERS,
        _mail(subject),
        Recorder(),
        max_recipients=3,
        pipelining=False,
    )

    assert relay.transactions == 2 and relay.waited == 2
    await _all_arrived(mail_stack, USERS, subject)


async def test_several_connections_share_the_batches(
    mail_stack: MailStack, holding: tuple[Holding, int]
) -> None:
    relay, port = holding
    relay.expect = 2
    subject = f"parallel {uuid.uuid4().hex}"
    record = Recorder()

    await smtpsend.send(
        _opener(port, start_tls=False),
        SENDER,
        USERS,
        _mail(subject),
        record,
        max_recipients=2,
        connections=2,
    )

    assert sorted(r for b in record.batches for r in b) == sorted(USERS)
    assert relay.connections == 2 and relay.transactions == 3 and relay.waited == 0
    await _all_arrived(mail_stack, USERS, subject)


async def test_pipelining_over_starttls_with_postfix(
    mail_stack: MailStack, test_ca: TestCA
) -> None:
    subject = f"tls {uuid.uuid4().hex}"
    context = ssl.create_default_context(cafile=str(test_ca.ca))
    opener = _opener(mail_stack.submission_port, start_tls=True, tls_context=context)
    record = Recorder()

    await smtpsend.send(opener, SENDER, USERS[:4], _mail(subject), record, max_recipients=2)

    assert len(record.batches) == 2 and not record.errors
    await _all_arrived(mail_stack, USERS[:4], subject)


async def test_postfix_refusing_some_recipients_is_reported_per_recipient(
    mail_stack: MailStack, holding: tuple[Holding, int]
) -> None:
    relay, port = holding
    subject = f"partly {uuid.uuid4().hex}"
    to = ["alice@test.example", "someone@elsewhere.test", "bob@test.example"]
    record = Recorder()

    await smtpsend.send(_opener(port), SENDER, to, _mail(subject), record, max_recipients=3)

    assert list(record.errors) == ["someone@elsewhere.test"]
    assert record.errors["someone@elsewhere.test"].code >= 500
    assert relay.waited == 0
    await _all_arrived(mail_stack, ["alice@test.example", "bob@test.example"], subject)


# -- answers as each test needs: aiosmtpd offering PIPELINING ------------------------------


class Scripted:
    """aiosmtpd handler: PIPELINING offered, a fixed answer per recipient, MAIL and DATA."""

    def __init__(self) -> None:
        self.rcpt: dict[str, str] = {}
        self.mail = "250 OK"
        self.data = "250 OK"
        self.delivered: list[list[str]] = []

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self.mail.startswith("250"):
            envelope.mail_from = address
        return self.mail

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        answer = self.rcpt.get(address, "250 OK")
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data.startswith("250"):
            self.delivered.append(list(envelope.rcpt_tos))
        return self.data


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, int]]:
    handler = Scripted()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(handler, hostname="mx.nic.test", loop=loop), "127.0.0.1", 0
    )
    try:
        yield handler, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


PEOPLE = [f"m{i}@nic.test" for i in range(5)]


async def test_4xx_and_5xx_per_recipient_are_told_apart(scripted: Any) -> None:
    handler, port = scripted
    handler.rcpt = {"m1@nic.test": "451 4.3.0 try later", "m3@nic.test": "550 5.1.1 no such user"}
    record = Recorder()

    await smtpsend.send(
        _opener(port), SENDER, PEOPLE, b"Subject: x\r\n\r\nhi\r\n", record, max_recipients=2
    )

    assert record.batches == [PEOPLE[:2], PEOPLE[2:4], PEOPLE[4:]]
    assert {a: r.code for a, r in record.errors.items()} == {"m1@nic.test": 451, "m3@nic.test": 550}
    assert handler.delivered == [["m0@nic.test"], ["m2@nic.test"], ["m4@nic.test"]]


async def test_a_batch_refused_whole_is_a_batch_of_errors_not_a_failure(scripted: Any) -> None:
    handler, port = scripted
    handler.rcpt = {p: "550 5.1.1 no" for p in PEOPLE[:2]}
    record = Recorder()

    await smtpsend.send(_opener(port), SENDER, PEOPLE, b"x\r\n", record, max_recipients=2)

    assert set(record.errors) == set(PEOPLE[:2])
    assert handler.delivered == [PEOPLE[2:4], PEOPLE[4:]]  # the session went on after RSET


@pytest.mark.parametrize(
    ("where", "answer", "error"),
    [
        ("data", "554 5.3.4 message too big", aiosmtplib.SMTPDataError),
        ("data", "451 4.3.0 queue full", aiosmtplib.SMTPDataError),
        ("mail", "553 5.7.1 sender refused", aiosmtplib.SMTPSenderRefused),
    ],
)
async def test_a_refused_transaction_stops_the_row_with_the_servers_code(
    scripted: Any, where: str, answer: str, error: type[Exception]
) -> None:
    handler, port = scripted
    setattr(handler, where, answer)
    record = Recorder()

    with pytest.raises(error) as raised:
        await smtpsend.send(_opener(port), SENDER, PEOPLE, b"x\r\n", record, max_recipients=2)

    assert getattr(raised.value, "code", None) == int(answer[:3])
    assert record.batches == []  # nothing is recorded as delivered


async def test_an_address_that_would_inject_a_command_is_refused_before_sending(
    scripted: Any,
) -> None:
    handler, port = scripted
    with pytest.raises(ValueError, match="not permitted"):
        await smtpsend.send(
            _opener(port), SENDER, ["a@nic.test>\r\nRSET"], b"x\r\n", Recorder(), max_recipients=2
        )
    assert handler.delivered == []


def test_data_section_normalises_line_ends_and_doubles_leading_dots() -> None:
    assert smtpsend.data_bytes(b"a\n.b\r.c\r\nd") == b"a\r\n..b\r\n..c\r\nd\r\n.\r\n"


async def test_a_garbled_reply_fails_the_row_and_closes_the_connection() -> None:
    """Nothing waits on a server that stopped speaking SMTP (not even for QUIT)."""

    async def garbling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"EHLO"):
                writer.write(b"250-mx\r\n250 PIPELINING\r\n")
            elif line.upper().startswith(b"MAIL"):
                writer.write(b"this is not SMTP\r\n")
        writer.close()

    server = await asyncio.start_server(garbling, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(aiosmtplib.SMTPResponseException, match="malformed"):
            await smtpsend.send(
                _opener(port), SENDER, PEOPLE, b"x\r\n", Recorder(), max_recipients=5
            )
        assert loop.time() - start < 5  # not the 60 s a QUIT without answer would take
    finally:
        server.close()
        await server.wait_closed()
