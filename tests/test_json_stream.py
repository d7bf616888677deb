"""Incremental reading of large JSON arrays: the same values as json.loads, at any chunk size."""
import json

import pytest

from trajectories.sources.json_stream import iter_json_records

CASES = ['[]', ' [ ] ', '[1, 2.5e3 ,"a]\\"",{"x":[1,{"y":null}]}, null, true, -0.5]',
         '{"one": "record"}', '[12345]', '[{"a": "' + "é" * 40 + '"}, 7]']


class Invalid(Exception):
    pass


def invalid(file):
    raise Invalid(file)


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_values_equal_json_loads(tmp_path, text, chunk):
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    expected = json.loads(text)
    expected = expected if isinstance(expected, list) else [expected]
    assert list(iter_json_records(path, invalid, chunk)) == expected


@pytest.mark.parametrize("text", ['[1,2', '[1 2]', '[1,2] x', '[{"a":1}, {"b":]', '[1,]', ''])
def test_malformed_text_calls_the_readers_error(tmp_path, text):
    path = tmp_path / "a.json"
    path.write_text(text)
    with pytest.raises(Invalid):
        list(iter_json_records(path, invalid, 3))


def test_elements_stream_before_the_end_is_read(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[" + ",".join(json.dumps({"i": i}) for i in range(1000)) + ", oops]")
    records = iter_json_records(path, invalid, 64)
    assert next(records) == {"i": 0}  # the first record comes before the bad tail is reached
    with pytest.raises(Invalid):
        list(records)
