import pytest

from council.core.errors import CouncilError
from council.core.locks import exclusive


def test_a_held_lock_refuses_a_second_holder_in_one_line_and_is_free_again_after(tmp_path):
    path = tmp_path / "home" / "serve.lock"
    with exclusive(path, "another `council serve`", "stop it"):
        with pytest.raises(CouncilError, match=r"another `council serve` holds .*serve.lock") as refused:
            with exclusive(path, "another `council serve`", "stop it"):
                pass
        assert refused.value.fix == "stop it"
    with exclusive(path, "another `council serve`", "stop it"):
        assert path.exists()
