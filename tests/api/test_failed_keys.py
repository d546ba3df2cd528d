"""Wrong API keys cost a guesser time: a few free, then a doubling wait during which no key is even compared."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from app.api.auth import Guard, KeyRing
from app.main import create_app
from app.model import SaliencyModel
from app.ratelimit import KeyFailureThrottle
from app.settings import Settings
from tests.conftest import ThreadedServer, serving
from tests.images import photo, to_bytes
from tests.wire import free_port

SMALL = to_bytes(photo().resize((170, 110)), "JPEG", quality=90)
KEY = "the-one-right-key-0123"
WRONG = {"X-Api-Key": "a-guess-0000000000000"}
RIGHT = {"X-Api-Key": KEY}


class CountingKeyRing(KeyRing):
    """The real key ring, counting how often a presented key is compared."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        super().__init__(keys)
        self.compared = 0

    def match(self, presented: str) -> int | None:
        self.compared += 1
        return super().match(presented)


class ClockedServer:
    """The real app with keys, whose wrong-key throttle runs on a clock the test moves."""

    def __init__(self, model: SaliencyModel) -> None:
        self.now = 0.0
        self.keys = CountingKeyRing((KEY,))
        self.app = create_app(Settings(workers=1, api_keys=(KEY,)), model)
        self.app.state.guard = Guard(self.keys, None, KeyFailureThrottle(clock=lambda: self.now))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def clocked(model: SaliencyModel) -> Iterator[ClockedServer]:
    server = ClockedServer(model)
    with ThreadedServer(server.app, server.port):
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.02)
        yield server


def remove(url: str, headers: dict[str, str], client: httpx.Client) -> httpx.Response:
    return client.post(url + "/remove?mask=true", content=SMALL, headers=headers)


def client_at(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def test_after_five_wrong_keys_a_client_waits_longer_each_time_and_its_keys_are_not_compared(
    clocked: ClockedServer,
) -> None:
    with client_at("127.0.0.21") as guesser, client_at("127.0.0.22") as neighbour:
        statuses = [remove(clocked.url, WRONG, guesser).status_code for _ in range(5)]
        assert statuses == [403] * 5

        compared = clocked.keys.compared
        refused = remove(clocked.url, WRONG, guesser)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_failed_keys"
        assert refused.headers["retry-after"] == "1"
        right_too = remove(clocked.url, RIGHT, guesser)  # even the right key: nothing is compared while it waits
        assert right_too.status_code == 429 and right_too.json()["error"]["code"] == "too_many_failed_keys"
        theirs = guesser.get(clocked.url + "/v1.0/account", headers=RIGHT)
        assert theirs.status_code == 429 and theirs.json()["errors"][0]["code"] == "too_many_failed_keys"
        assert clocked.keys.compared == compared, "a key was compared during the back-off"

        assert remove(clocked.url, RIGHT, neighbour).status_code == 200  # another address is not held up

        clocked.now += 1.0
        assert remove(clocked.url, RIGHT, guesser).status_code == 200  # the back-off over, the right key works
        assert remove(clocked.url, WRONG, guesser).status_code == 403  # one more guess, then twice the wait
        assert remove(clocked.url, WRONG, guesser).headers["retry-after"] == "2"
        clocked.now += 2.0
        assert remove(clocked.url, WRONG, guesser).status_code == 403
        assert remove(clocked.url, RIGHT, guesser).headers["retry-after"] == "4"

        clocked.now += 3600.0  # a quiet hour forgets the count: five free guesses again
        assert [remove(clocked.url, WRONG, guesser).status_code for _ in range(5)] == [403] * 5
        assert httpx.get(clocked.url + "/healthz").status_code == 200


def test_a_missing_key_is_no_guess(clocked: ClockedServer) -> None:
    with client_at("127.0.0.23") as client:
        statuses = {remove(clocked.url, {}, client).status_code for _ in range(10)}
        assert statuses == {401}
        assert remove(clocked.url, RIGHT, client).status_code == 200


def test_the_service_as_configured_throttles_guesses_on_one_connection(model: SaliencyModel) -> None:
    """With the settings alone (no test clock): a burst of guesses on one keep-alive connection is cut off."""
    with (
        serving(Settings(workers=1, api_keys=(KEY,)), model) as live,
        client_at("127.0.0.24") as client,
        client_at("127.0.0.25") as other,
    ):
        responses = [remove(live.url, WRONG, client) for _ in range(20)]
        statuses = [response.status_code for response in responses]
        assert statuses[:5] == [403] * 5
        assert statuses.count(403) <= 8, statuses  # not every guess compared: 850 a second before
        refused = [response for response in responses if response.status_code == 429]
        assert refused and all(response.json()["error"]["code"] == "too_many_failed_keys" for response in refused)
        assert all(int(response.headers["retry-after"]) >= 1 for response in refused)
        assert httpx.get(live.url + "/healthz").status_code == 200
        assert remove(live.url, RIGHT, other).status_code == 200  # other clients are served


def test_the_table_of_clients_stays_bounded_when_addresses_rotate() -> None:
    throttle = KeyFailureThrottle(max_clients=100, clock=lambda: 0.0)
    for _ in range(5):
        throttle.failed("192.0.2.1")
    assert throttle.retry_after_s("192.0.2.1") == 1
    for host in range(50_000):
        throttle.failed(f"10.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255}")
    assert len(throttle) == 100  # the price of the bound: the longest quiet is forgotten first
    assert throttle.retry_after_s("192.0.2.1") == 0
    for _ in range(5):
        throttle.failed("192.0.2.2")
    assert throttle.retry_after_s("192.0.2.2") == 1 and len(throttle) == 100


def test_an_ipv6_client_counts_by_its_64_block() -> None:
    throttle = KeyFailureThrottle(clock=lambda: 0.0)
    for host in range(5):
        throttle.failed(f"2001:db8:1:2::{host + 1:x}")
    assert throttle.retry_after_s("2001:db8:1:2:ffff::9") == 1
    assert throttle.retry_after_s("2001:db8:1:3::1") == 0
    for _ in range(5):
        throttle.failed("::ffff:192.0.2.7")  # an IPv4 client on a dual-stack socket is itself
    assert throttle.retry_after_s("192.0.2.7") == 1


def test_the_wait_doubles_up_to_its_cap() -> None:
    now = [0.0]
    throttle = KeyFailureThrottle(first_backoff_s=1.0, max_backoff_s=300.0, clock=lambda: now[0])
    waits = []
    for _ in range(16):
        throttle.failed("192.0.2.9")
        waits.append(throttle.retry_after_s("192.0.2.9"))
        now[0] += waits[-1]
    assert waits[:4] == [0, 0, 0, 0]
    assert waits[4:] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
