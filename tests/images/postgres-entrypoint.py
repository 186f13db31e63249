"""The official image's contract, as far as the Compose test needs it: initialise PGDATA once with POSTGRES_USER as
the superuser, POSTGRES_PASSWORD (scram) and the database POSTGRES_DB; then run the server as this process (exec),
listening on every interface, so that it gets the engine's stop signal itself."""

import os
import subprocess
import tempfile

data = os.environ.get("PGDATA", "/var/lib/postgresql/18/docker")
user = os.environ.get("POSTGRES_USER", "postgres")
database = os.environ.get("POSTGRES_DB", user)
password = os.environ["POSTGRES_PASSWORD"]

if not os.path.exists(os.path.join(data, "PG_VERSION")):
    os.makedirs(data, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", delete=False) as pwfile:
        pwfile.write(password)
    subprocess.run(["initdb", "-D", data, "-U", user, f"--pwfile={pwfile.name}", "--auth-local=trust",
                    "--auth-host=scram-sha-256", "--encoding=UTF8"], check=True)  # fmt: skip
    os.unlink(pwfile.name)
    with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
        hba.write("host all all all scram-sha-256\n")
    subprocess.run(["pg_ctl", "-D", data, "-w", "-o", "-c listen_addresses=''", "start"], check=True)
    if database != "postgres":
        subprocess.run(["createdb", "-U", user, database], check=True)
    subprocess.run(["pg_ctl", "-D", data, "-w", "-m", "fast", "stop"], check=True)
os.execvp("postgres", ["postgres", "-D", data, "-c", "listen_addresses=*"])
