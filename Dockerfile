# Staccato worker image.
#
#   docker build -t staccato .
#   docker run --rm staccato --help        # ENTRYPOINT is the `staccato` CLI
#   docker run --rm staccato               # CMD defaults to `staccato worker`
#
# The build context is filtered by .dockerignore (only pyproject.toml, README.md
# and the staccato/ package are sent).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the project (and its console script `staccato`) into the system
# site-packages, then drop the sources.
WORKDIR /src
COPY . .
RUN pip install . \
 && rm -rf /src

# Run as an unprivileged user. /data is the shared volume for file:// transfers
# (docker-compose mounts a named volume there; a fresh volume inherits this
# ownership). ~/.ssh is where docker-compose mounts the SFTP key + known_hosts.
RUN groupadd --system --gid 10001 staccato \
 && useradd --system --uid 10001 --gid staccato --create-home --home-dir /home/staccato staccato \
 && mkdir -p /data /home/staccato/.ssh \
 && chown staccato:staccato /data /home/staccato/.ssh \
 && chmod 700 /home/staccato/.ssh

USER staccato:staccato
WORKDIR /home/staccato

ENTRYPOINT ["staccato"]
CMD ["worker"]
