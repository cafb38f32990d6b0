"""Debian's docker-registry 2.8.2 with its `s3` storage driver on a Garage bucket.

    reg = S3Registry(workdir, garage, rootdirectory="/registry").start()

Everything else is the filesystem oracle's Registry (tests/oracle/registry.py): the
same config (signing key, schema1, delete enabled, no upload purging, loopback only)
with only the storage driver swapped, and the same push/get helpers. Objects land
under `<rootdirectory without its leading slash>/docker/registry/v2/...` in the
bucket (`key_prefix`).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "oracle"))

from registry import Registry, RegistryError  # noqa: E402


class S3Registry(Registry):
    def __init__(self, workdir, garage, rootdirectory="/registry", redirect=False, log_name="registry.log"):
        """redirect=False sets `storage.redirect.disable`, so blob GETs are answered
        with the bytes, as the filesystem oracle does; with True the registry answers
        307 to a presigned URL at the S3 endpoint (the s3 driver's default)."""
        super().__init__(workdir, log_name)
        if not rootdirectory.startswith("/"):
            raise ValueError(f"rootdirectory must be absolute: {rootdirectory!r}")
        self.garage = garage
        self.rootdirectory = rootdirectory
        self.redirect = redirect

    def start(self, timeout=20.0):
        """Registry.start() without AWS_* variables in the registry's environment.

        The s3 driver's AWS SDK reads them, and AWS_CA_BUNDLE alone (set on many CI
        machines) makes 2.8.2 panic at startup ("unable to load custom CA bundle,
        HTTPClient's transport unsupported type"). Registry.start() copies
        os.environ, so the variables are hidden from it for the duration."""
        hidden = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
        try:
            return super().start(timeout)
        finally:
            os.environ.update(hidden)

    @property
    def key_prefix(self):
        """The bucket prefix every registry object lives under, with its trailing slash."""
        return self.rootdirectory.strip("/") + "/docker/registry/v2/"

    def _write_files(self):
        super()._write_files()
        g = self.garage
        filesystem = f'  filesystem:\n    rootdirectory: "{self.root}"\n'
        # region must be Garage's s3_region (it signs with it); regionendpoint turns
        # on path-style addressing (2.8.2 has no forcepathstyle); Garage needs v4 auth.
        s3 = f"""\
  s3:
    region: "{g.region}"
    regionendpoint: "{g.endpoint}"
    bucket: "{g.bucket}"
    accesskey: "{g.access_key_id}"
    secretkey: "{g.secret_access_key}"
    secure: false
    v4auth: true
    rootdirectory: "{self.rootdirectory}"
"""
        if not self.redirect:
            s3 += "  redirect:\n    disable: true\n"
        with open(self.config_path) as f:
            config = f.read()
        if config.count(filesystem) != 1:
            raise RegistryError(
                f"{self.config_path}: no single filesystem storage block to replace "
                "(tests/oracle/registry.py's config changed?)"
            )
        with open(self.config_path, "w") as f:
            f.write(config.replace(filesystem, s3))
        os.chmod(self.config_path, 0o600)
