"""SimCloud, the in-memory Cloud on a virtual clock: boot lag, billing, idempotent launches, capacity
errors, spot notices (scripted and by hazard) and reclaim 120 s later."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.cloud.base import CapacityError, InstanceNotFound
from orchestrator.economics.ledger import CostLedger, LedgerError
from orchestrator.sim.cloud import SPOT_NOTICE_S, CloudEvent, SimCloud
from orchestrator.types import InstanceState, Market
from tests.fakes import ManualClock, catalog

C5 = "c5.large"


def test_boot_lag_then_running() -> None:
    cloud = SimCloud(catalog())
    (inst,) = cloud.launch_now(C5, Market.ON_DEMAND)
    boot = catalog().boot_seconds(C5)
    assert inst.state == InstanceState.PENDING and inst.ready_at == boot
    assert cloud.next_event_s() == boot
    assert cloud.advance(boot - 1) == []
    assert cloud.advance(boot) == [CloudEvent(boot, "ready", inst.id)]
    assert cloud.instance(inst.id).state == InstanceState.RUNNING
    assert cloud.now() == boot


def test_booted_launch_and_boot_override() -> None:
    cloud = SimCloud(catalog(), boot_seconds={C5: 0.0})
    (a,) = cloud.launch_now(C5, Market.ON_DEMAND)
    (b,) = cloud.launch_now("m5.large", Market.ON_DEMAND, booted=True)
    assert a.state == b.state == InstanceState.RUNNING
    assert cloud.next_event_s() == float("inf")


def test_same_token_launches_once() -> None:
    cloud = SimCloud(catalog())
    first = cloud.launch_now(C5, Market.ON_DEMAND, 2, token="t")
    again = cloud.launch_now(C5, Market.ON_DEMAND, 2, token="t")
    assert [i.id for i in first] == [i.id for i in again]
    assert len(cloud.instances()) == 2 and cloud.launches == 2


def test_capacity_limits_refuse_the_whole_launch() -> None:
    cloud = SimCloud(catalog(), max_instances=4, max_per_pool={"c5.large/spot": 1})
    cloud.launch_now(C5, Market.ON_DEMAND, 2)
    with pytest.raises(CapacityError, match="at most 4"):
        cloud.launch_now(C5, Market.ON_DEMAND, 3)
    with pytest.raises(CapacityError, match="c5.large/spot"):
        cloud.launch_now(C5, Market.SPOT, 2)
    assert len(cloud.instances()) == 2
    cloud.launch_now(C5, Market.SPOT, 1)
    cloud.launch_now(C5, Market.ON_DEMAND, 1)
    with pytest.raises(CapacityError):
        cloud.launch_now(C5, Market.ON_DEMAND, 1)
    cloud.terminate_now([cloud.instances()[0].id])
    cloud.launch_now(C5, Market.ON_DEMAND, 1)  # room again after a termination


def test_terminate_bills_from_launch_with_the_60_s_minimum() -> None:
    clock = ManualClock()
    cloud = SimCloud(catalog(), clock)
    (a,) = cloud.launch_now(C5, Market.ON_DEMAND)
    cloud.advance(20.0)
    (b,) = cloud.launch_now(C5, Market.SPOT)
    cloud.advance(30.0)
    cloud.terminate_now([a.id, b.id])
    cloud.terminate_now([a.id])  # again: nothing more
    with pytest.raises(InstanceNotFound):
        cloud.terminate_now(["nope"])
    snap = cloud.ledger.snapshot(100.0)
    od, spot = catalog().price_usd_per_hour(C5, "on-demand"), catalog().price_usd_per_hour(C5, "spot")
    assert snap.instance_usd == pytest.approx((od + spot) * 60 / 3600)  # 30 s and 10 s lived, 60 s billed
    assert cloud.billed_hours(100.0) == {"c5.large/on-demand": 60 / 3600, "c5.large/spot": 60 / 3600}
    assert cloud.instance(a.id).terminated_at == 30.0


def test_scripted_notice_by_pool_then_reclaim() -> None:
    cloud = SimCloud(catalog(), spot_schedule=[(100.0, C5)])
    s1, s2 = cloud.launch_now(C5, Market.SPOT, 2)
    (od,) = cloud.launch_now(C5, Market.ON_DEMAND)
    events = cloud.advance(100.0)
    assert [(e.kind, e.instance_id) for e in events if e.kind == "notice"] == [("notice", s1.id), ("notice", s2.id)]
    assert {n.instance_id: n.terminate_at for n in cloud.interruption_notices()} == {
        s1.id: 100.0 + SPOT_NOTICE_S,
        s2.id: 100.0 + SPOT_NOTICE_S,
    }
    assert cloud.instance(s1.id).state == InstanceState.DRAINING and cloud.is_draining(s1.id)
    assert cloud.instance(od.id).state == InstanceState.RUNNING
    events = cloud.advance(500.0)
    assert [(e.at_s, e.kind) for e in events] == [(220.0, "reclaimed"), (220.0, "reclaimed")]
    assert cloud.interruption_notices() == []
    assert cloud.instance(s1.id).terminated_at == 220.0
    assert cloud.notices_issued == 2


def test_scripted_notice_ignores_on_demand_and_dead_instances() -> None:
    cloud = SimCloud(catalog(), spot_schedule=[(10.0, "sim-00000001"), (20.0, "sim-00000002")])
    cloud.launch_now(C5, Market.ON_DEMAND)
    (spot,) = cloud.launch_now(C5, Market.SPOT)
    cloud.terminate_now([spot.id])
    assert [e for e in cloud.advance(1000.0) if e.kind != "ready"] == []


def test_notice_on_a_pending_instance_means_it_never_serves() -> None:
    cloud = SimCloud(catalog(), spot_schedule=[(10.0, "sim-00000001")])
    cloud.launch_now(C5, Market.SPOT)
    kinds = [e.kind for e in cloud.advance(1000.0)]
    assert kinds == ["notice", "reclaimed"]


def test_hazard_is_seeded_and_spot_only() -> None:
    def notices(seed: int) -> list[float]:
        cloud = SimCloud(catalog(), spot_hazard_per_hour={"*": 2.0}, seed=seed)
        cloud.launch_now(C5, Market.SPOT, 30)
        cloud.launch_now(C5, Market.ON_DEMAND, 30)
        return [e.at_s for e in cloud.advance(36_000.0) if e.kind == "notice"]

    a, b, c = notices(1), notices(1), notices(2)
    assert a == b != c
    assert len(a) == 30  # every spot instance within 10 h at 2 per hour (P(miss) ~ 2e-9 each)
    assert 0.3 * 1800 < sum(a) / len(a) < 1.7 * 1800  # mean time to notice 1 / rate = 30 min


def test_sagemaker_prices_and_on_demand_only() -> None:
    cloud = SimCloud(catalog(), price_source="sagemaker")
    (inst,) = cloud.launch_now(C5, Market.ON_DEMAND)
    assert cloud.usd_per_hour(C5, "on-demand") == catalog().instance(C5).sagemaker_realtime_usd_per_hour.value
    cloud.advance(3600.0)
    assert cloud.ledger.snapshot(3600.0).instance_usd == pytest.approx(cloud.usd_per_hour(C5, "on-demand"))
    with pytest.raises(ValueError, match="on-demand only"):
        cloud.launch_now(C5, Market.SPOT)
    assert inst.id == "sim-00000001"


def test_the_async_cloud_interface() -> None:
    async def go() -> None:
        cloud = SimCloud(catalog())
        (inst,) = await cloud.launch(C5, Market.ON_DEMAND)
        await cloud.terminate([inst.id])
        (other,) = await cloud.launch(C5, Market.ON_DEMAND)
        await cloud.close()
        assert all(i.state == InstanceState.TERMINATED for i in cloud.instances())
        assert other.id != inst.id

    asyncio.run(go())


def test_ledger_bills_an_explicit_hourly_price() -> None:
    ledger = CostLedger(catalog())
    ledger.instance_started("a", C5, "on-demand", 0.0, usd_per_hour=1.0)
    ledger.instance_started("b", C5, "on-demand", 0.0)
    assert ledger.snapshot(3600.0).instance_usd == pytest.approx(1.0 + catalog().price_usd_per_hour(C5, "on-demand"))
    with pytest.raises(LedgerError, match="usd_per_hour"):
        ledger.instance_started("c", C5, "on-demand", 0.0, usd_per_hour=-1.0)
    with pytest.raises(ValueError):
        ledger.instance_started("d", "x9.huge", "on-demand", 0.0, usd_per_hour=1.0)  # the type is still checked
