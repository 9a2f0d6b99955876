import pytest

from shrinkwrap_async.hashing import EMPTY_ZLIB_OBJECT, Algorithm, Digest

# Object hashes of the empty file as a zlib publisher stores it (cvmfs-format.md §5).
VECTORS = {
    Algorithm.SHA1: "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78",
    Algorithm.RMD160: "fcdb20b894f31f1306d56294c049ca7293dde0fc-rmd160",
    Algorithm.SHAKE128: "28d94b83b7229b331fc601362b8e272e02665122-shake128",
}


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_empty_object_vectors(algorithm):
    assert algorithm.hash(EMPTY_ZLIB_OBJECT).hex == VECTORS[algorithm]


@pytest.mark.parametrize("text", list(VECTORS.values()))
def test_hex_round_trip(text):
    digest = Digest.from_hex(text)
    assert digest.hex == text
    assert digest.matches(EMPTY_ZLIB_OBJECT)


def test_object_path_puts_identifier_before_suffix():
    digest = Digest.from_hex(VECTORS[Algorithm.RMD160])
    assert digest.object_path("C") == "data/fc/db20b894f31f1306d56294c049ca7293dde0fc-rmd160C"


@pytest.mark.parametrize("bad", ["", "abc", "zz" * 20, "e8" * 20 + "-md5"])
def test_rejects_malformed_hex(bad):
    with pytest.raises(ValueError):
        Digest.from_hex(bad)
