"""``primia certs``: set up a consortium's CA from the command line, and clear errors."""

from datetime import UTC, datetime, timedelta

import pytest

from primia.cli import main
from primia.pki import issue, tls_files, verify_peer


def test_init_issue_list(tmp_path, capsys):
    pki = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(pki), "--consortium", "Lung Study"]) == 0
    out = capsys.readouterr().out
    assert str(pki / "ca.pem") in out
    assert f"primia certs issue --dir {pki} --name coordinator --role coordinator" in out

    issue_coordinator = [
        "issue",
        "--dir",
        str(pki),
        "--name",
        "coordinator",
        "--role",
        "coordinator",
    ]
    assert main(["certs", *issue_coordinator, "--host", "10.0.0.5", "--host", "coord.org"]) == 0
    out = capsys.readouterr().out
    for file in ("ca.pem", "coordinator.pem", "coordinator.key"):
        assert str(pki / file) in out
    assert "must keep it private" in out
    ca_pem, cert_pem, _ = tls_files(pki, "coordinator").read()
    assert verify_peer(cert_pem, ca_pem).role == "coordinator"

    assert (
        main(["certs", "issue", "--dir", str(pki), "--name", "hospital-a", "--role", "node"]) == 0
    )
    issue(pki, "old", "node", days=1, not_before=datetime.now(UTC) - timedelta(days=5))
    capsys.readouterr()
    assert main(["certs", "list", "--dir", str(pki)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "ca.pem",
        "coordinator.pem",
        "hospital-a.pem",
        "old.pem",
    ]
    assert "hospital-a (node) of consortium Lung Study" in lines[2]
    assert "EXPIRED on" in lines[3] and "valid until" in lines[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "--name", "hospital-a", "--role", "node"], "primia certs init --dir"),
        (["list"], "is not a folder"),
    ],
)
def test_errors_without_a_ca(tmp_path, capsys, args, message):
    pki = tmp_path / "missing"
    assert main(["certs", *args[:1], "--dir", str(pki), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("primia: error:") and message in err


def test_refuses_to_overwrite_and_bad_names(tmp_path, capsys):
    pki = str(tmp_path)
    assert main(["certs", "init", "--dir", pki, "--consortium", "Lung Study"]) == 0
    assert main(["certs", "init", "--dir", pki, "--consortium", "Lung Study"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["certs", "issue", "--dir", pki, "--name", "bad_name", "--role", "node"]) == 2
    assert "invalid name 'bad_name'" in capsys.readouterr().err


def test_unknown_role_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["certs", "issue", "--dir", str(tmp_path), "--name", "x", "--role", "admin"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'admin'" in capsys.readouterr().err


def test_help_teaches_a_consortium_setup(capsys):
    with pytest.raises(SystemExit):
        main(["certs", "--help"])
    out = capsys.readouterr().out
    assert "certs init" in out and "--role coordinator" in out and "hospital-b" in out
    assert main(["certs"]) == 2  # a group without a command prints its help
