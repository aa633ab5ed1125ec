//! OCI image archives (an OCI layout in one tar file, as `just images` writes them) for containers
//! that run from their image rather than from a mapped binary: the image's config (entrypoint,
//! cmd, env, user, working directory), its layers unpacked in order into a root filesystem with
//! whiteouts applied, and the Kubernetes rules that combine these with a container spec (argv,
//! env, user, `runAsNonRoot`).
//!
//! Extraction uses GNU tar (it detects gzip itself, strips leading `/` and refuses `..` members).
//! Not done: blob digest verification, image indexes with several platforms.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What the image's config says about running it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries in image order.
    pub env: Vec<(String, String)>,
    /// `uid`, `uid:gid`, `name` or `name:group`; empty means root.
    pub user: String,
    pub working_dir: String,
}

impl ImageConfig {
    /// From the image config JSON (`config` holds the run settings).
    pub fn from_json(config: &Value) -> ImageConfig {
        let run = &config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        ImageConfig {
            entrypoint: strings(&run["Entrypoint"]),
            cmd: strings(&run["Cmd"]),
            env: strings(&run["Env"])
                .into_iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect(),
            user: run["User"].as_str().unwrap_or_default().to_string(),
            working_dir: run["WorkingDir"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// The container's argv by Kubernetes' rules: `command` replaces the entrypoint (and drops the
/// image's cmd), `args` replaces the cmd.
pub fn argv(
    image: &ImageConfig,
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Vec<String> {
    let (head, default_tail) = match command {
        Some(command) => (command.to_vec(), Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let tail = args.map_or(default_tail, <[String]>::to_vec);
    head.into_iter().chain(tail).collect()
}

/// The container's environment: the image's, overridden by the pod's.
pub fn env(image: &ImageConfig, pod: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = image.env.iter().cloned().collect();
    env.extend(pod.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The security context's say on the user (pod level merged with container level).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UserOverride {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
}

/// The numeric uid and gid the container runs as: `runAsUser`/`runAsGroup` over the image's
/// `User`, names looked up in the image's /etc/passwd and /etc/group (given as text). Refuses, as
/// the kubelet does, a non-numeric user it cannot resolve and root under `runAsNonRoot`.
pub fn user(
    image_user: &str,
    over: UserOverride,
    passwd: &str,
    group: &str,
) -> Result<(u32, u32), String> {
    let (name, group_name) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let lookup = |table: &str, name: &str, field: usize| -> Option<u32> {
        table
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(field)?.parse().ok())
    };
    let image_uid = match name {
        "" => 0,
        n => n
            .parse()
            .ok()
            .or_else(|| lookup(passwd, n, 2))
            .ok_or_else(|| format!("image user {n:?} is not in the image's /etc/passwd"))?,
    };
    let uid = match over.run_as_user {
        Some(u) => u32::try_from(u).map_err(|_| format!("runAsUser {u} is out of range"))?,
        None => image_uid,
    };
    let primary_gid = || {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
            .and_then(|f| f.get(3)?.parse().ok())
            .unwrap_or(0)
    };
    let gid = match (over.run_as_group, group_name) {
        (Some(g), _) => u32::try_from(g).map_err(|_| format!("runAsGroup {g} is out of range"))?,
        (None, Some(g)) => g
            .parse()
            .ok()
            .or_else(|| lookup(group, g, 2))
            .ok_or_else(|| format!("image group {g:?} is not in the image's /etc/group"))?,
        (None, None) => primary_gid(),
    };
    if over.run_as_non_root && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    Ok((uid, gid))
}

/// Unpacks the one image in `archive` into `rootfs` (created, must not hold anything else) and
/// returns its config. `scratch` is a working directory for the blobs, removed afterwards.
pub fn unpack(archive: &Path, rootfs: &Path, scratch: &Path) -> Result<ImageConfig, String> {
    std::fs::create_dir_all(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let result = unpack_into(archive, rootfs, scratch);
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn unpack_into(archive: &Path, rootfs: &Path, scratch: &Path) -> Result<ImageConfig, String> {
    let archive_s = archive.to_string_lossy();
    let scratch_s = scratch.to_string_lossy();
    tar(&["-xf", &archive_s, "-C", &scratch_s])?;
    let read_json = |rel: &str| -> Result<Value, String> {
        let path = scratch.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| format!("{rel} in {archive_s}: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{rel} in {archive_s}: {e}"))
    };
    let index = read_json("index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let [descriptor] = manifests.as_slice() else {
        return Err(format!(
            "{archive_s}: expected one image, index.json lists {}",
            manifests.len()
        ));
    };
    let manifest = read_json(&blob_path(descriptor)?)?;
    let config = read_json(&blob_path(&manifest["config"])?)?;
    let rootfs_s = rootfs.to_string_lossy();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let blob = scratch.join(blob_path(layer)?);
        let blob_s = blob.to_string_lossy();
        let listing = tar(&["-tf", &blob_s])?;
        for entry in String::from_utf8_lossy(&listing).lines() {
            apply_whiteout(rootfs, entry)?;
        }
        tar(&[
            "-xf",
            &blob_s,
            "-C",
            &rootfs_s,
            "--numeric-owner",
            "--same-permissions",
            "--exclude=.wh.*",
        ])?;
    }
    Ok(ImageConfig::from_json(&config))
}

/// `blobs/<algorithm>/<hex>` of a descriptor, refusing anything that is not a plain digest.
fn blob_path(descriptor: &Value) -> Result<String, String> {
    let digest = descriptor["digest"].as_str().unwrap_or_default();
    match digest.split_once(':') {
        Some((algorithm, hex))
            if !algorithm.is_empty()
                && algorithm.chars().all(|c| c.is_ascii_alphanumeric())
                && !hex.is_empty()
                && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(format!("blobs/{algorithm}/{hex}"))
        }
        _ => Err(format!("descriptor without a valid digest: {descriptor}")),
    }
}

/// Applies one layer entry if it is a whiteout: `.wh.<name>` deletes `<name>` from the layers
/// below, `.wh..wh..opq` empties its directory. Other entries are left to tar.
fn apply_whiteout(rootfs: &Path, entry: &str) -> Result<(), String> {
    let path = Path::new(entry.trim_start_matches("./"));
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let Some(hidden) = name.strip_prefix(".wh.") else {
        return Ok(());
    };
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("layer entry {entry:?} leaves the root filesystem"));
    }
    let dir = rootfs.join(path.parent().unwrap_or(Path::new("")));
    let targets: Vec<PathBuf> = if hidden == ".wh..opq" {
        std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    } else {
        vec![dir.join(hidden)]
    };
    for target in targets {
        let removed = match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&target),
            Ok(_) => std::fs::remove_file(&target),
            Err(_) => Ok(()),
        };
        removed.map_err(|e| format!("whiteout {entry:?}: {}: {e}", target.display()))?;
    }
    Ok(())
}

fn tar(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("tar")
        .args(args)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "tar {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig::from_json(&json!({"config": {
            "Entrypoint": ["/bin/app"], "Cmd": ["--serve"],
            "Env": ["PATH=/usr/local/bin", "MODE=image"], "User": "65532:65532",
            "WorkingDir": "/"
        }}))
    }

    #[test]
    fn argv_follows_kubernetes_command_and_args_rules() {
        let img = image();
        let (cmd, args) = (s(&["/other"]), s(&["--flag"]));
        assert_eq!(argv(&img, None, None), s(&["/bin/app", "--serve"]));
        assert_eq!(argv(&img, Some(&cmd), None), s(&["/other"]));
        assert_eq!(argv(&img, None, Some(&args)), s(&["/bin/app", "--flag"]));
        assert_eq!(
            argv(&img, Some(&cmd), Some(&args)),
            s(&["/other", "--flag"])
        );
    }

    #[test]
    fn pod_env_overrides_image_env() {
        let pod = BTreeMap::from([("MODE".to_string(), "pod".to_string())]);
        let env = env(&image(), &pod);
        assert_eq!(env["MODE"], "pod");
        assert_eq!(env["PATH"], "/usr/local/bin");
    }

    #[test]
    fn user_resolution_and_run_as_non_root() {
        let passwd = "root:x:0:0::/root:/sbin/nologin\nnonroot:x:65532:65533::/:/sbin/nologin\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        let none = UserOverride::default();
        assert_eq!(user("65532:65532", none, "", ""), Ok((65532, 65532)));
        assert_eq!(user("nonroot", none, passwd, group), Ok((65532, 65533)));
        assert_eq!(user("nonroot:staff", none, passwd, group), Ok((65532, 50)));
        assert_eq!(user("", none, passwd, group), Ok((0, 0)));
        assert!(user("ghost", none, passwd, group).is_err());
        let pod = UserOverride {
            run_as_user: Some(10001),
            run_as_group: None,
            run_as_non_root: true,
        };
        assert_eq!(user("65532:65532", pod, passwd, group), Ok((10001, 65532)));
        let root = UserOverride {
            run_as_non_root: true,
            ..UserOverride::default()
        };
        assert!(user("", root, passwd, group).is_err());
        assert!(user("0:0", root, passwd, group).is_err());
        assert_eq!(user("65532", root, passwd, group), Ok((65532, 65533)));
    }

    #[test]
    fn blob_paths_are_plain_digests() {
        assert_eq!(
            blob_path(&json!({"digest": "sha256:ab12"})),
            Ok("blobs/sha256/ab12".to_string())
        );
        assert!(blob_path(&json!({"digest": "sha256:../../etc"})).is_err());
        assert!(blob_path(&json!({})).is_err());
    }

    /// Two layers built with tar: the second deletes a file and empties a directory of the first
    /// (whiteouts) and adds its own files; the unpacked root has exactly the union that remains.
    #[test]
    fn unpack_applies_layers_in_order_with_whiteouts() {
        let base = std::env::temp_dir().join(format!("podrunner-oci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let write = |rel: &str, text: &str| {
            let path = base.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        write("l1/a/keep", "1");
        write("l1/a/gone", "1");
        write("l1/b/old", "1");
        write("l1/d/sub/deep", "1");
        write("l2/a/.wh.gone", "");
        write("l2/b/.wh..wh..opq", "");
        write("l2/b/new", "2");
        write("l2/.wh.d", "");
        write("l2/c", "2");
        let layout = base.join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
        let mut layers = vec![];
        for (i, dir) in ["l1", "l2"].iter().enumerate() {
            let hex = format!("{:064x}", i + 1);
            let blob = layout.join("blobs/sha256").join(&hex);
            let dir = base.join(dir);
            tar(&[
                "-czf",
                &blob.to_string_lossy(),
                "-C",
                &dir.to_string_lossy(),
                ".",
            ])
            .expect("tar layer");
            layers.push(
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                               "digest": format!("sha256:{hex}")}),
            );
        }
        let config = json!({"config": {"Entrypoint": ["/c"], "User": "7"}});
        let manifest =
            json!({"config": {"digest": format!("sha256:{:064x}", 10)}, "layers": layers});
        std::fs::write(
            layout.join(format!("blobs/sha256/{:064x}", 10)),
            config.to_string(),
        )
        .expect("write config");
        std::fs::write(
            layout.join(format!("blobs/sha256/{:064x}", 11)),
            manifest.to_string(),
        )
        .expect("write manifest");
        let index = json!({"manifests": [{"digest": format!("sha256:{:064x}", 11)}]});
        std::fs::write(layout.join("index.json"), index.to_string()).expect("write index");
        let archive = base.join("image.tar");
        tar(&[
            "-cf",
            &archive.to_string_lossy(),
            "-C",
            &layout.to_string_lossy(),
            ".",
        ])
        .expect("tar archive");

        let rootfs = base.join("rootfs");
        let config = unpack(&archive, &rootfs, &base.join("scratch")).expect("unpack");
        assert_eq!(config.entrypoint, s(&["/c"]));
        assert_eq!(config.user, "7");
        let mut files: Vec<String> = walk(&rootfs)
            .into_iter()
            .map(|p| {
                p.strip_prefix(&rootfs)
                    .expect("under rootfs")
                    .display()
                    .to_string()
            })
            .collect();
        files.sort();
        assert_eq!(files, s(&["a/keep", "b/new", "c"]));
        assert!(!base.join("scratch").exists(), "scratch removed");
        let _ = std::fs::remove_dir_all(&base);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
