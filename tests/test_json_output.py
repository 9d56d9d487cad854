"""`--json` commands print JSON alone on stdout; library notices (smplx's) go to stderr."""

from __future__ import annotations

import json


def test_body_info_json_is_the_only_thing_on_stdout(capsys):
    from densehmr.body.__main__ import main

    assert main(["info", "open", "--json"]) == 0
    out, err = capsys.readouterr()
    info = json.loads(out)  # the whole of stdout
    assert info["name"] == "open" and info["num_vertices"] > info["lowpoly_vertices"] > 0
    assert "WARNING: You are using a SMPL model" in err  # the notice is kept, on stderr
