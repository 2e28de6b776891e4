# dray as a container image: the static binary and nothing else.
#
# There is no build stage (build machines may have no registry to pull a Go
# image from): scripts/image builds the binary with CGO_ENABLED=0 and puts it
# here with the CA certificates, then runs `docker build`.
#
#   scripts/image dray:dev
#   docker run --rm -p 8080:8080 -v "$PWD/example:/project" dray:dev
FROM scratch
COPY dray /usr/local/bin/dray
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# WORKDIR makes the folders: /tmp for attempts' temporary files and the
# agent's log spool, /project for the project (mount yours there).
WORKDIR /tmp
WORKDIR /project
ENV TMPDIR=/tmp
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/dray"]
CMD ["server", "--listen", "0.0.0.0:8080"]
