//! Where the agent keeps each pod's files under its state directory. The pod workers write
//! them and the agent's server (logs, exec) reads them, so both take the paths from here.

use std::path::{Path, PathBuf};

/// `STATE/pods/<uid>`: everything the agent keeps for one pod.
pub fn pod_dir(state_dir: &Path, pod_uid: &str) -> PathBuf {
    state_dir.join("pods").join(pod_uid)
}

/// The current run's stdout and stderr of a container.
pub fn log_path(state_dir: &Path, pod_uid: &str, container: &str) -> PathBuf {
    pod_dir(state_dir, pod_uid).join(format!("{container}.log"))
}

/// The previous run's log (`kubectl logs --previous`), moved aside when the container restarts.
pub fn previous_log_path(state_dir: &Path, pod_uid: &str, container: &str) -> PathBuf {
    pod_dir(state_dir, pod_uid).join(format!("{container}.previous.log"))
}

/// The PID of the container's running process (absent while it is not running); exec
/// enters this process's namespaces.
pub fn pid_path(state_dir: &Path, pod_uid: &str, container: &str) -> PathBuf {
    pod_dir(state_dir, pod_uid).join(format!("{container}.pid"))
}

/// The files of one pod volume (`configMap`, `emptyDir`), bound into its containers.
pub fn volume_dir(state_dir: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    pod_dir(state_dir, pod_uid).join("volumes").join(volume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_per_pod_and_container() {
        let s = Path::new("/s");
        assert_eq!(log_path(s, "u1", "web"), Path::new("/s/pods/u1/web.log"));
        assert_eq!(
            previous_log_path(s, "u1", "web"),
            Path::new("/s/pods/u1/web.previous.log")
        );
        assert_eq!(pid_path(s, "u1", "web"), Path::new("/s/pods/u1/web.pid"));
        assert_eq!(
            volume_dir(s, "u1", "conf"),
            Path::new("/s/pods/u1/volumes/conf")
        );
    }
}
