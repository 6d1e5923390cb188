"""The worklist's patient columns: DICOM person names as people write them, and the bounded
LRU cache of header columns (the newest used stay, the least recently used go first)."""

from __future__ import annotations

import threading

from xrayd.web.formats import dicom_date, person_name
from xrayd.web.worklist_patients import HeaderCache, PatientColumns


def _columns(n: int) -> PatientColumns:
    return PatientColumns(f"Name {n}", f"MRN{n}", f"ACC{n}", "HAND")


def test_person_names_read_family_first() -> None:
    assert person_name("Doe^Jane") == "Doe, Jane"
    assert person_name("Doe^Jane^Q^Dr^PhD") == "Doe, Jane Q Dr"
    assert person_name("Doe") == "Doe"
    assert person_name("^Jane") == "Jane"
    assert person_name("") == ""
    # the alphabetic group only (ideographic and phonetic groups follow '=')
    assert person_name("Yamada^Tarou=山田^太郎=やまだ^たろう") == "Yamada, Tarou"


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = HeaderCache(size=2)
    cache.put("a", _columns(1))
    cache.put("b", _columns(2))
    assert cache.get("a") == _columns(1)  # "a" is now the most recently used
    cache.put("c", _columns(3))
    assert len(cache) == 2
    assert cache.get("b") is None  # evicted
    assert cache.get("a") == _columns(1) and cache.get("c") == _columns(3)
    assert PatientColumns("", "", "", "").empty and not _columns(1).empty


def test_the_cache_stays_bounded_under_concurrent_use() -> None:
    cache = HeaderCache(size=50)

    def fill(offset: int) -> None:
        for n in range(500):
            cache.put(f"{offset}-{n}", _columns(n))
            cache.get(f"{offset}-{n // 2}")

    threads = [threading.Thread(target=fill, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50


def test_dicom_dates_read_as_iso_dates() -> None:
    assert dicom_date("20261123") == "2026-11-23"
    assert dicom_date("2026-11-23") == "2026-11-23"  # already readable: unchanged
    assert dicom_date("") == "" and dicom_date(None) == ""
