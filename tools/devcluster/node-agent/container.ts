/**
 * How the node agent starts a container: a fresh mount and UTS namespace in which the
 * image's layout is mounted read-only at /app (made as an empty mount point on the host's
 * root the first time), its Node.js binary at /usr/local/bin/node (a tmpfs over that
 * directory, in this namespace only), the ServiceAccount directory at the in-cluster path,
 * `/run` a tmpfs with the pod's volumes mounted in it (volumes.ts), the root read-only if
 * asked; then the program runs in /app (the image's
 * WORKDIR) as the container's user.
 */
import { dirname } from "node:path";
import { APP_DIR, NODE_PATH } from "./images.js";
import type { Mount } from "./volumes.js";

/** The in-cluster ServiceAccount path. */
const SA_MOUNT = "/run/secrets/kubernetes.io/serviceaccount";

/** Positional: layout, node, sa-dir (or "-"), hostname, read-only (0/1), uid, gid, no-new-privs (0/1), mounts (source TAB target lines), argv... */
const CONTAINER_INIT = `set -e
mount -t tmpfs -o mode=0755,size=16m tmpfs /run
mkdir -p ${APP_DIR}; mount --bind -o ro "$1" ${APP_DIR}
mount -t tmpfs -o mode=0755,size=1m tmpfs ${dirname(NODE_PATH)}
touch ${NODE_PATH}; mount --bind -o ro "$2" ${NODE_PATH}
if [ "$3" != - ]; then mkdir -p ${SA_MOUNT}; mount --bind -o ro "$3" ${SA_MOUNT}; fi
printf '%s\n' "$9" | while IFS="$(printf '\t')" read -r src dst; do
  if [ -n "$src" ]; then mkdir -p "$dst"; mount --bind -o ro "$src" "$dst"; fi
done
hostname "$4"
if [ "$5" = 1 ]; then mount -o remount,bind,ro /; fi
uid=$6; gid=$7; nnp=$8; shift 9
cd ${APP_DIR}
if [ "$nnp" = 1 ]; then exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs "$@"; fi
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"`;

/** What a container is started with. */
export interface ContainerLaunch {
  /** The image's layout on the host (mounted at /app). */
  layout: string;
  /** The Node.js binary on the host (mounted at /usr/local/bin/node). */
  node: string;
  /** The pod's ServiceAccount directory on the host, or "-" for none. */
  serviceAccountDir: string;
  hostname: string;
  readOnlyRootFilesystem: boolean;
  uid: number;
  gid: number;
  noNewPrivileges: boolean;
  /** The pod's volumes this container mounts (targets under /run). */
  mounts: Mount[];
  /** The program and its arguments, as paths inside the container. */
  argv: string[];
}

/** The command (run as root, inside the pod's network namespace) that starts the container. */
export function containerArgv(c: ContainerLaunch): string[] {
  return [
    "unshare",
    "--mount",
    "--uts",
    "--propagation",
    "private",
    "sh",
    "-c",
    CONTAINER_INIT,
    "sh",
    c.layout,
    c.node,
    c.serviceAccountDir,
    c.hostname,
    c.readOnlyRootFilesystem ? "1" : "0",
    String(c.uid),
    String(c.gid),
    c.noNewPrivileges ? "1" : "0",
    c.mounts.map((m) => `${m.source}\t${m.target}`).join("\n"),
    ...c.argv,
  ];
}
