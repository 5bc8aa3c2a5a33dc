"""tests/worker/test_lane_input.py on the Redis Cluster, with 200 malformed commands, not 1000.

Pairing through commands and events, malformed command entries, garbage
from the terminal, and no key material in logs or events.
"""

from tests.worker import test_lane_input as on_one_server
from tests.worker.helpers import LaneRig

test_pairing_works_entirely_through_commands_and_events = (
    on_one_server.test_pairing_works_entirely_through_commands_and_events
)
test_garbage_from_the_terminal_is_counted_and_the_lane_goes_on = (
    on_one_server.test_garbage_from_the_terminal_is_counted_and_the_lane_goes_on
)
test_no_key_material_in_logs_or_events = on_one_server.test_no_key_material_in_logs_or_events


async def test_two_hundred_malformed_commands_never_stop_the_valid_ones(lane: LaneRig) -> None:
    await on_one_server.check_malformed_commands(lane, 200)
