import numpy as np

from helpers.evolution.decoder_matches import DecoderMatches
from helpers.experiment import PRESETS
from helpers.notebook.feature_rows import decoder_match_rows


class Labels:
    def label(self, site, feature, n=5):
        return f"{site}/{feature}"


def test_decoder_match_rows_are_the_highest_cosines_labelled():
    exp = PRESETS["smoke"]
    m = DecoderMatches(pair=np.array([0, 0, 1]), a=np.array([0, 1, 0]), b=np.array([4, 2, 7]),
                       cos=np.array([0.3, 0.9, 0.6], np.float32), r=np.array([0.1, np.nan, -0.2]))
    rows = decoder_match_rows(exp, m, Labels(), n=2)
    s = exp.sites
    assert [(r["sites"], r["feature"], r["next-site feature"]) for r in rows] == [
        (f"{s[0]}->{s[1]}", 1, 2), (f"{s[1]}->{s[2]}", 0, 7)]
    assert rows[0]["top tokens"] == "0/1" and rows[0]["its top tokens"] == "1/2"
    assert rows[1]["r"] == -0.2 and rows[0]["link"] == ""  # SAEs trained here: no Neuronpedia page
