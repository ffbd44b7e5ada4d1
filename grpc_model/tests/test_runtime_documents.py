"""Rows from a CSV or JSON item: matched by column name, refused with the row and column at fault."""

import pytest

np = pytest.importorskip("numpy", reason="the runtimes' groups install numpy")

from grpc_model.src.runtimes.documents import InputError, read_rows  # noqa: E402  (numpy first)

NAMES = ["a", "b"]


def test_csv_columns_in_any_order_and_json_rows_give_the_same_matrix() -> None:
    expected = [[1.0, 2.0], [3.0, 4.5]]
    assert read_rows(b"\xef\xbb\xbfb,a\r\n2,1\r\n4.5,3\r\n\r\n", NAMES).tolist() == expected
    assert read_rows(b'[[1, 2], {"b": 4.5, "a": 3}]', NAMES).tolist() == expected
    assert np.isnan(read_rows(b"a,b\nnan,1\n", NAMES)[0, 0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"a,b\n", "the file has no rows"),
        (b"a,b,c\n1,2,3\n", "not features of this model: 'c'"),
        (b"a,a,b\n1,2,3\n", "repeated: 'a'"),
        (b"a,b\n1,\n", "row 1, column 'b': empty"),
        (b"a,b\n1,2,3\n", "row 1 has 3 values; the header names 2 columns"),
        (b'[{"a": 1}]', "row 1: missing 'b'"),
        (b'[[1, "2"]]', "row 1, column 'b': \"2\" is not a number"),
        (b"[[1, true]]", "row 1, column 'b': true is not a number"),
        (b'{"a": 1}', "a JSON input must be a list of rows"),
        (b"[1, 2]", "row 1 is int: each row must be a list of numbers or an object"),
        (b"\xff\xfe", "the file is not UTF-8"),
    ],
)
def test_what_cannot_be_read_is_named(content: bytes, message: str) -> None:
    with pytest.raises(InputError) as error:
        read_rows(content, NAMES)
    assert message in str(error.value)
