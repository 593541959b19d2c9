"""Paging a monitoring query: pages within the tenant count and the service's point limit, and
the pages' answers merged back into one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from powerx_upgrade.domain.monitoring import MAX_POINTS, merge_answers, query_pages

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_pages_hold_at_most_the_tenants_per_query_in_order_without_duplicates():
    tenants = [f"t-{n:03d}" for n in range(1, 11)] + ["t-001"]
    pages = query_pages(tenants, T0, T0 + timedelta(minutes=1), per_query=4)
    assert pages == [
        ["t-001", "t-002", "t-003", "t-004"],
        ["t-005", "t-006", "t-007", "t-008"],
        ["t-009", "t-010"],
    ]


def test_a_long_interval_makes_pages_smaller_to_stay_under_the_point_limit():
    tenants = [f"t-{n:06d}" for n in range(100_000)]
    # 30 minutes of 10 s buckets, partial buckets at both edges: 181 buckets per tenant
    pages = query_pages(tenants, T0, T0 + timedelta(minutes=30), per_query=100_000)
    assert max(len(p) for p in pages) == MAX_POINTS // 181
    assert all(len(p) * 181 <= MAX_POINTS for p in pages)
    assert [t for p in pages for t in p] == tenants
    # the sandbox's own limit in a test scenario: 1,000 points, 30 minutes -> 5 tenants a page
    small = query_pages(tenants[:12], T0, T0 + timedelta(minutes=30), 200, max_points=1000)
    assert [len(p) for p in small] == [5, 5, 2]


def test_an_interval_longer_than_the_limit_still_asks_one_tenant_a_page():
    pages = query_pages(["a", "b"], T0, T0 + timedelta(days=1000), per_query=200)
    assert pages == [["a"], ["b"]]


def test_no_tenants_no_page():
    assert query_pages([], T0, T0 + timedelta(minutes=1), per_query=200) == []


def test_answers_merge_every_page_tenants_and_no_data():
    first = {
        "plugin": "crm-sync",
        "bucket_seconds": 10.0,
        "tenants": {"a": {"requests": 1}},
        "no_data": ["b"],
    }
    second = {"plugin": "crm-sync", "bucket_seconds": 10.0, "tenants": {"c": {}}, "no_data": []}
    third = {"plugin": "crm-sync", "tenants": {"d": {"requests": 2}}, "no_data": ["e"]}
    merged = merge_answers([first, second, third])
    assert merged["tenants"] == {"a": {"requests": 1}, "c": {}, "d": {"requests": 2}}
    assert merged["no_data"] == ["b", "e"]
    assert merged["bucket_seconds"] == 10.0
    assert first["tenants"] == {"a": {"requests": 1}}  # the pages' answers are not changed


def test_a_page_without_tenants_is_handed_on_for_the_shape_check_to_refuse():
    broken = {"error": "not the documented shape"}
    assert merge_answers([{"tenants": {"a": {}}}, broken]) == broken
    assert merge_answers([]) == {"tenants": {}, "no_data": []}
