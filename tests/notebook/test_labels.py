from helpers.notebook.labels import short_pair, short_site, sites_caption, threshold_label


def test_short_names_for_wide_tables():
    assert short_site("blocks.4.hook_resid_post") == "L4"
    assert short_site("blocks.17.hook_resid_pre") == "L17 pre"
    assert short_site("blocks.4.hook_resid_post@w512") == "L4 w512"
    assert short_site("hidden.3") == "h3"
    assert short_site("something.else") == "something.else"
    assert short_pair("blocks.4.hook_resid_post->blocks.5.hook_resid_post") == "L4 → L5"
    assert short_pair("all pairs") == "all pairs"
    assert threshold_label(0.4) == "0.4" and threshold_label(0.95, "r") == "r ≥ 0.95"
    caption = sites_caption([f"blocks.{i}.hook_resid_post" for i in range(18)])
    assert "blocks.<i>.hook_resid_post" in caption and "from L0 to L17" in caption
    assert sites_caption(["hidden.0", "hidden.1"]) == "h0 = hidden.0; h1 = hidden.1"
