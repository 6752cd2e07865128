"""Statistics over seeds: mean and standard deviation of a metric, and the mean of the
seed-paired differences to the baseline with its 95% t-interval and a verdict."""
import math

# two-sided 95% quantiles of Student's t for df = 1..30; the normal 1.96 beyond
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
         2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074,
         2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
ONE_SEED = 'one seed: cannot tell a difference from noise'


def mean_std(values):
    """(mean, sample standard deviation) of ``values``; None where undefined."""
    n = len(values)
    mean = sum(values) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std


def paired_difference(base, other):
    """``other - base`` over the seeds both have (``{seed: value}`` each): dict(n, mean,
    ci_low, ci_high, verdict). The verdict is 'better' or 'worse' when the 95% interval
    excludes 0, 'within noise' when it contains it, :data:`ONE_SEED` for one pair."""
    diffs = [other[s] - base[s] for s in sorted(set(base) & set(other))]
    mean, std = mean_std(diffs)
    result = dict(n=len(diffs), mean=mean, ci_low=None, ci_high=None,
                  verdict=ONE_SEED if diffs else None)
    if std is not None:
        t = T_975[len(diffs) - 2] if len(diffs) - 1 <= len(T_975) else 1.96
        half = t * std / math.sqrt(len(diffs))
        low, high = mean - half, mean + half
        result.update(ci_low=low, ci_high=high, verdict='better' if low > 0 else
                      'worse' if high < 0 else 'within noise')
    return result
