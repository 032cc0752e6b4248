"""The prediction distribution a model replica exports: rows per label, and per bin of standard units."""

import numpy as np

from raymlp.monitor.metrics import Z_BINS, label_counts, value_bins


def test_labels_are_counted_as_text():
    assert label_counts(np.array([1, 0, 1, 1])) == {"0": 1, "1": 3}
    assert label_counts(np.array(["yes", "no", "yes"])) == {"no": 1, "yes": 2}


def test_values_fall_in_the_bins_of_their_standard_units():
    # center 10, scale 2: z = -4, -0.5, 0 (a bin's lower edge belongs to it), 1.5, 3, 7
    values = np.array([2.0, 9.0, 10.0, 13.0, 16.0, 24.0])
    assert value_bins(values, center=10.0, scale=2.0) == {"<-3": 1, "-1..0": 1, "0..1": 1, "1..2": 1, ">=3": 2}
    assert set(value_bins(values, 10.0, 2.0)) <= set(Z_BINS)
