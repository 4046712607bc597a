import random
import statistics

from alleycat_rider.core.physiology import RideBounds, RiderModel, RiderProfile


def _ride(seed, seconds=300, bounds=None):
    rng = random.Random(seed)
    model = RiderModel(RiderProfile.draw(rng), bounds or RideBounds())
    return [model.step(rng) for _ in range(seconds)]


def test_readings_stay_within_the_bounds():
    bounds = RideBounds(cadence_min=40, cadence_max=70, resistance_min=10, resistance_max=20)
    for seed in range(50):
        for cadence, resistance in _ride(seed, bounds=bounds):
            assert 40 <= cadence <= 70 and 10 <= resistance <= 20


def test_a_seed_repeats_the_same_ride():
    assert _ride(3) == _ride(3)
    assert _ride(3) != _ride(4)


def test_riders_warm_up_then_vary():
    rides = [_ride(seed) for seed in range(40)]
    first = statistics.mean(c for ride in rides for c, _ in ride[:5])
    later = statistics.mean(c for ride in rides for c, _ in ride[60:120])
    assert later > first + 3
    assert all(statistics.pstdev(c for c, _ in ride) > 1.0 for ride in rides)


def test_stronger_riders_pedal_faster():
    def mean_cadence(ability):
        rng = random.Random(1)
        model = RiderModel(RiderProfile(ability=ability, endurance=0.6))
        return statistics.mean(model.step(rng)[0] for _ in range(300))

    assert mean_cadence(0.9) > mean_cadence(0.2) + 10


def test_tenths_are_the_reading_with_one_decimal():
    a, b = random.Random(9), random.Random(9)
    model_a = RiderModel(RiderProfile.draw(a))
    model_b = RiderModel(RiderProfile.draw(b))
    for _ in range(300):
        cadence, resistance = model_a.step(a)
        tenths = model_b.step_tenths(b)
        assert (cadence, resistance) == (tenths[0] / 10, tenths[1] / 10)
        assert cadence == round(cadence, 1) and resistance == round(resistance, 1)
