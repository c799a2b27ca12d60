"""The public API of confide.crypto is what __all__ lists, and nothing private leaks."""

from __future__ import annotations

import confide.crypto


def test_all_names_exist_and_are_sorted() -> None:
    names = confide.crypto.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert hasattr(confide.crypto, name), name


def test_nothing_public_is_missing_from_all() -> None:
    public = {
        name for name in vars(confide.crypto) if not name.startswith("_") and name != "annotations"
    }
    assert public == set(confide.crypto.__all__)


def test_public_api() -> None:
    assert set(confide.crypto.__all__) >= {
        "CryptoError",
        "PackageKey",
        "X25519KeyPair",
        "seal",
        "unseal",
        "encrypt_package",
        "decrypt_package",
        "package_digest",
        "encrypt_stream",
        "decrypt_stream",
        "IgnoreRules",
    }
