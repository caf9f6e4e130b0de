from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from observe.workload.stops import StopScanner
from observe.workload.tokenizer import ByteTokenizer

EOS = ByteTokenizer.EOS_ID
PAD = ByteTokenizer.PAD_ID
tokenizer = ByteTokenizer()


def ids(text: str) -> list[int]:
    return tokenizer.encode(text, bos=False)


def scan(stops: Sequence[str], *feeds: Sequence[int]) -> tuple[list[list[int]], StopScanner]:
    """What each feed released, then what finish() did, and the scanner."""
    scanner = StopScanner(stops)
    released = [scanner.feed(feed) for feed in feeds]
    return [*released, scanner.finish()], scanner


def reference(stops: Sequence[str], generated: Sequence[int]) -> tuple[list[int], int, bool]:
    """The output, ids consumed and whether it stopped, cut the obvious way: at the first
    occurrence in the whole byte stream, the shortest stop of those starting there."""
    end = generated.index(EOS) if EOS in generated else len(generated)
    byte_at = [k for k in range(end) if generated[k] < 256]
    data = bytes(generated[k] for k in byte_at)
    found = [(data.find(s.encode()), len(s.encode())) for s in stops if s.encode() in data]
    if not found:
        eos = EOS in generated
        return list(generated[:end]), end + eos, eos
    start, length = min(found)
    return list(generated[: byte_at[start]]), byte_at[start + length - 1] + 1, True


def test_without_stops_every_id_is_released_at_once() -> None:
    released, scanner = scan([], ids("ab"), ids("c"))
    assert released == [ids("ab"), ids("c"), []]
    assert (scanner.stopped, scanner.consumed) == (False, 3)


def test_a_stop_split_across_feeds_is_held_back_then_cut() -> None:
    released, scanner = scan(["END"], ids("xE"), ids("N"), ids("Dyz"))
    assert released == [ids("x"), [], [], []]
    assert (scanner.stopped, scanner.consumed) == (True, 4)


def test_held_bytes_that_do_not_become_a_stop_are_released() -> None:
    released, scanner = scan(["END"], ids("xEN"), ids("Q"))
    assert released == [ids("x"), ids("ENQ"), []]
    released, scanner = scan(["END"], ids("xEN"))
    assert released == [ids("x"), ids("EN")]
    assert (scanner.stopped, scanner.consumed) == (False, 3)


def test_overlapping_prefixes_are_not_lost() -> None:
    released, scanner = scan(["aab"], ids("a"), ids("a"), ids("a"), ids("b"), ids("c"))
    assert released == [[], [], ids("a"), [], [], []]
    assert (scanner.stopped, scanner.consumed) == (True, 4)


def test_at_most_the_longest_stop_less_one_byte_is_held() -> None:
    scanner = StopScanner(["abcd", "x"])
    assert scanner.feed(ids("abc")) == []
    assert scanner.feed(ids("a")) == ids("abc")
    assert scanner.finish() == ids("a")


def test_the_earliest_starting_stop_wins() -> None:
    # "b" completes first, but "abc" starts earlier: the output is cut before it.
    released, scanner = scan(["b", "abc"], ids("xab"), ids("c"))
    assert released == [ids("x"), [], []]
    assert (scanner.stopped, scanner.consumed) == (True, 4)
    # The earlier one never completes: the later one cuts.
    released, scanner = scan(["b", "abc"], ids("xab"), ids("d"))
    assert released == [ids("x"), ids("a"), []]
    assert (scanner.stopped, scanner.consumed) == (True, 3)
    # Generation ends while the earlier one is still open: the later one cuts.
    released, scanner = scan(["b", "abc"], ids("xab"))
    assert released == [ids("x"), ids("a")]
    assert (scanner.stopped, scanner.consumed) == (True, 3)


def test_stops_starting_at_the_same_byte_cut_at_the_first_to_complete() -> None:
    released, scanner = scan(["abc", "ab"], ids("xab"), ids("c"))
    assert released == [ids("x"), [], []]
    assert (scanner.stopped, scanner.consumed) == (True, 3)


def test_multibyte_utf8_stops_match_bytes_however_split() -> None:
    text = ids("café → ok")
    stop_at = text.index(ids("→")[0])
    released, scanner = scan(["→"], *[[i] for i in text])
    assert tokenizer.decode(list(itertools.chain(*released))) == "café "
    assert (scanner.stopped, scanner.consumed) == (True, stop_at + 3)
    # A stop sharing a lead byte with the text's other characters does not cut it.
    released, scanner = scan(["é!"], text)
    assert tokenizer.decode(list(itertools.chain(*released))) == "café → ok"
    assert not scanner.stopped


def test_eos_ends_the_output_and_is_never_released() -> None:
    released, scanner = scan(["END"], [*ids("xEN"), EOS, *ids("D")], ids("more"))
    assert released == [ids("xEN"), [], []]
    assert (scanner.stopped, scanner.consumed) == (True, 4)
    released, scanner = scan([], [EOS])
    assert released == [[], []]
    assert (scanner.stopped, scanner.consumed) == (True, 1)


def test_a_stop_found_before_eos_counts_through_the_stop() -> None:
    released, scanner = scan(["b", "abc"], [*ids("xab"), EOS])
    assert released == [ids("xa"), []]
    assert (scanner.stopped, scanner.consumed) == (True, 3)


def test_special_ids_are_passed_over_when_matching() -> None:
    released, scanner = scan(["ab"], [*ids("xa"), PAD, *ids("bc")])
    assert released == [ids("x"), []]
    assert (scanner.stopped, scanner.consumed) == (True, 4)
    released, scanner = scan(["ab"], [PAD, *ids("a"), PAD])
    assert released == [[PAD], [*ids("a"), PAD]]


@given(
    stops=st.lists(st.text(alphabet="abé", min_size=1, max_size=4), max_size=4),
    generated=st.lists(st.sampled_from([*ids("abé"), 0xC3, PAD, EOS]), max_size=24),
    cuts=st.lists(st.integers(0, 24), max_size=4),
)
def test_any_feeding_gives_the_obvious_cut(
    stops: list[str], generated: list[int], cuts: list[int]
) -> None:
    bounds = [0, *sorted(min(cut, len(generated)) for cut in cuts), len(generated)]
    longest = max((len(stop.encode()) for stop in stops), default=1)
    scanner = StopScanner(stops)
    shown: list[int] = []
    for start, end in itertools.pairwise(bounds):
        shown += scanner.feed(generated[start:end])
        if not scanner.stopped:
            held = [i for i in generated[len(shown) : end] if i < 256]
            assert len(held) <= longest - 1
    shown += scanner.finish()
    assert (shown, scanner.consumed, scanner.stopped) == reference(stops, generated)
