//! Files a host image needs so that it behaves as its real image does, copied into each of
//! its containers. Debian's nginx would read the node's /etc/nginx, log to the node's
//! /var/log/nginx and serve Debian's page; the `nginx` image instead reads a configuration
//! of the same shape as the official image's (server blocks in /etc/nginx/conf.d, where a
//! ConfigMap can replace them), logs to stdout and stderr (so `kubectl logs` shows them) and
//! serves /usr/share/nginx/html.

use std::path::{Path, PathBuf};

use crate::init::Copy;

const NGINX_CONF: &str = "\
user www-data;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
";

const DEFAULT_CONF: &str = "\
server {
    listen 80;
    server_name localhost;

    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }

    error_page 500 502 503 504 /50x.html;
    location = /50x.html {
        root /usr/share/nginx/html;
    }
}
";

const INDEX_HTML: &str = "\
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>This nginx runs in a berth pod. Put your pages in /usr/share/nginx/html and your server
blocks in /etc/nginx/conf.d.</p>
</body>
</html>
";

const ERROR_HTML: &str = "\
<!DOCTYPE html>
<html>
<head><title>Error</title></head>
<body>
<h1>An error occurred.</h1>
<p>The page you are looking for is currently unavailable.</p>
</body>
</html>
";

/// Used when the node has no /etc/nginx/mime.types.
const MIME_TYPES: &str = "\
types {
    text/html html htm;
    text/css css;
    application/javascript js;
    application/json json;
    image/png png;
    image/svg+xml svg;
    text/plain txt;
}
";

/// The trees to copy into a container of `repository` (an image name without tag), made
/// under `state_dir` the first time they are needed.
pub fn for_image(state_dir: &Path, repository: &str) -> std::io::Result<Vec<Copy>> {
    if repository != "nginx" {
        return Ok(Vec::new());
    }
    let base = state_dir.join("host-images").join("nginx");
    let trees = [
        (base.join("etc"), "/etc/nginx"),
        (base.join("log"), "/var/log/nginx"),
        (base.join("html"), "/usr/share/nginx/html"),
    ];
    if !base.join("ready").exists() {
        write_nginx(&base)?;
    }
    Ok(trees
        .into_iter()
        .map(|(source, target)| Copy {
            source: source.display().to_string(),
            target: target.into(),
        })
        .collect())
}

fn write_nginx(base: &Path) -> std::io::Result<()> {
    // Made beside and renamed, so two pods starting at once never see half a tree.
    let tmp: PathBuf = base.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mime =
        std::fs::read_to_string("/etc/nginx/mime.types").unwrap_or_else(|_| MIME_TYPES.to_owned());
    for (path, content) in [
        ("etc/nginx.conf", NGINX_CONF),
        ("etc/conf.d/default.conf", DEFAULT_CONF),
        ("etc/mime.types", mime.as_str()),
        ("html/index.html", INDEX_HTML),
        ("html/50x.html", ERROR_HTML),
    ] {
        let file = tmp.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&file, content)?;
        set_mode(&file, 0o644)?;
    }
    // As in the official image: the logs are the container's stdout and stderr.
    std::fs::create_dir_all(tmp.join("log"))?;
    std::os::unix::fs::symlink("/dev/stdout", tmp.join("log/access.log"))?;
    std::os::unix::fs::symlink("/dev/stderr", tmp.join("log/error.log"))?;
    for dir in ["", "etc", "etc/conf.d", "html", "log"] {
        set_mode(&tmp.join(dir), 0o755)?;
    }
    std::fs::write(tmp.join("ready"), "")?;
    let _ = std::fs::remove_dir_all(base);
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, base)
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_gets_its_image_files_once_and_others_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(for_image(dir.path(), "busybox").expect("ok").is_empty());
        let copies = for_image(dir.path(), "nginx").expect("made");
        let targets: Vec<_> = copies.iter().map(|c| c.target.as_str()).collect();
        assert_eq!(
            targets,
            ["/etc/nginx", "/var/log/nginx", "/usr/share/nginx/html"]
        );
        let etc = Path::new(&copies[0].source);
        let conf = std::fs::read_to_string(etc.join("nginx.conf")).expect("conf");
        assert!(conf.contains("include /etc/nginx/conf.d/*.conf;"), "{conf}");
        let log = Path::new(&copies[1].source);
        assert_eq!(
            std::fs::read_link(log.join("access.log")).expect("link"),
            Path::new("/dev/stdout")
        );
        // A second call finds them made.
        std::fs::write(etc.join("nginx.conf"), "kept").expect("write");
        for_image(dir.path(), "nginx").expect("again");
        assert_eq!(
            std::fs::read_to_string(etc.join("nginx.conf")).expect("conf"),
            "kept"
        );
    }
}
