# Sourced by the device scripts (gpu_run.sh, gpu_lpft.sh) from the repository root: unbuffered Python output, the
# wheels in .whl/ (MONAI, nibabel: pure Python, missing from the lent machine's image) installed into /tmp/s2dc_site,
# and the repository and that folder on PYTHONPATH.
export PYTHONUNBUFFERED=1
site=/tmp/s2dc_site
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
