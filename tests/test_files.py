"""thadcr.files: the hashing helpers, the one audio-suffix list, and no torch until a helper needs it."""

import hashlib
import os
import subprocess
import sys

from thadcr.files import AUDIO_SUFFIXES, sha256, sha256_file, write_if_changed


def test_sha256_hashes_its_parts_in_order_and_cuts_to_length(tmp_path):
    whole = hashlib.sha256(b"rate:16000|" + bytes(range(256))).hexdigest()
    assert sha256("rate:16000|", bytes(range(256))) == whole  # text as UTF-8, then the bytes
    assert sha256("rate:16000|" + bytes(range(256)).decode("latin-1")) != whole  # not the same text
    assert sha256("é", length=20) == hashlib.sha256("é".encode()).hexdigest()[:20]
    assert len(sha256()) == 64 and sha256() == hashlib.sha256(b"").hexdigest()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 9000)  # more than one read block
    assert sha256_file(big) == hashlib.sha256(big.read_bytes()).hexdigest() == sha256(big.read_bytes())


def test_one_audio_suffix_list_for_data_sets_search_and_the_builder():
    from thadcr.data import readers
    from thadcr.data.embedded import packages
    from thadcr.interfaces import search

    assert AUDIO_SUFFIXES == (".wav", ".flac", ".ogg", ".mp3")
    assert readers.AUDIO_SUFFIXES is search.AUDIO_SUFFIXES is packages.AUDIO_SUFFIXES is AUDIO_SUFFIXES


def test_files_config_and_the_command_line_module_import_no_torch():
    code = ("import sys, thadcr.files, thadcr.config, thadcr.interfaces.cli; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_write_if_changed_leaves_a_file_with_the_same_bytes_alone(tmp_path):
    path = tmp_path / "table.csv"
    assert write_if_changed(path, b"a,b\n1,2\n") and path.read_bytes() == b"a,b\n1,2\n"
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))  # a second older, whatever the file system's clock
    assert not write_if_changed(path, b"a,b\n1,2\n") and path.stat().st_mtime_ns == stamp - 10**9
    assert write_if_changed(path, b"a,b\n1,3\n") and path.read_bytes() == b"a,b\n1,3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no temporary left
