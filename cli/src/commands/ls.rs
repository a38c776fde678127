//! `cairn ls`.

use anyhow::Result;
use cairn_store::format::tree::{Node, NodeKind};
use cairn_store::{Id, Repository};

use crate::args::{GlobalArgs, LsArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// How deep below a listed directory to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// The directory's own entries.
    OneLevel,
    /// Everything below it.
    Recursive,
}

/// How entries are printed.
#[derive(Debug, Clone, Copy)]
struct Style {
    json: bool,
    long: bool,
}

/// The header line of `ls --long`, aligned with [`long_line`].
fn long_header() -> String {
    format!(
        "{:<10} {:>5} {:>5} {:>12} {:<19} path",
        "mode", "uid", "gid", "size", "modified"
    )
}

/// One entry of `ls --long`: mode, owner ids, size, local modification time, path (and a
/// symlink's target).
fn long_line(path: &str, node: &Node) -> String {
    let link = match &node.kind {
        NodeKind::Symlink { target } => format!(" -> {}", String::from_utf8_lossy(target)),
        _ => String::new(),
    };
    format!(
        "{:<10} {:>5} {:>5} {:>12} {:<19} {path}{link}",
        render::mode_string(render::node_mode(node)),
        node.uid,
        node.gid,
        node.size,
        render::local_time(node.mtime)
    )
}

fn print_node(style: Style, path: &str, node: &Node) {
    if style.json {
        let mut value = serde_json::json!({
            "message_type": "node", "path": path, "type": render::node_type(node),
            "mode": node.mode & 0o7777,
            "permissions": render::mode_string(render::node_mode(node)),
            "size": node.size, "mtime": render::rfc3339(node.mtime),
            "uid": node.uid, "gid": node.gid,
        });
        if let NodeKind::Symlink { target } = &node.kind {
            value["target"] = String::from_utf8_lossy(target).into();
        }
        render::json_line(&value);
    } else if style.long {
        outln!("{}", long_line(path, node));
    } else {
        outln!("{path}");
    }
}

/// Prints the entries of the directory `tree` (shown as `prefix`), and with
/// [`Depth::Recursive`] everything below them.
fn walk(
    repository: &Repository,
    style: Style,
    depth: Depth,
    tree: &Id,
    prefix: &str,
) -> Result<()> {
    for node in repository.load_tree(tree)?.nodes {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
        print_node(style, &path, &node);
        if depth == Depth::Recursive
            && let NodeKind::Directory { subtree } = &node.kind
        {
            walk(repository, style, depth, subtree, &path)?;
        }
    }
    Ok(())
}

/// Lists the snapshot: with no path everything (as restic does), else each path and, for a
/// directory, its entries (everything below with `--recursive`). `latest` is the newest
/// selected snapshot that holds the first path.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &LsArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    repository.sync_index()?;
    let chooser = super::Chooser::new(&repository, selection);
    let (_, snapshot) = chooser.holding(&args.snapshot, args.paths.first().map(String::as_str))?;
    let style = Style {
        json: global.json,
        long: args.long,
    };
    if style.long && !style.json {
        outln!("{}", long_header());
    }
    let depth = if args.recursive || args.paths.is_empty() {
        Depth::Recursive
    } else {
        Depth::OneLevel
    };
    let whole = [String::from("/")];
    let paths = if args.paths.is_empty() {
        &whole[..]
    } else {
        &args.paths[..]
    };
    for path in paths {
        match repository.find_node(&snapshot.root, path)? {
            None => walk(&repository, style, depth, &snapshot.root, "")?,
            Some(node) => {
                let shown = format!("/{}", path.trim_matches('/'));
                print_node(style, &shown, &node);
                if let NodeKind::Directory { subtree } = &node.kind {
                    walk(&repository, style, depth, subtree, &shown)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::format::tree::Timestamp;

    fn node(kind: NodeKind, mode: u32, size: u64) -> Node {
        Node {
            name: b"x".to_vec(),
            kind,
            mode,
            uid: 1000,
            gid: 100,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            inode: 0,
            device: 0,
            size,
            extensions: Vec::new(),
        }
    }

    #[test]
    fn long_lines_line_up_under_the_header() {
        let header = long_header();
        let file = long_line("/a", &node(NodeKind::Fifo, 0o010_644, 0));
        let link = long_line(
            "/b",
            &node(
                NodeKind::Symlink {
                    target: b"/etc".to_vec(),
                },
                0o120_777,
                0,
            ),
        );
        let path_column = header.find("path").unwrap();
        assert_eq!(&file[path_column..], "/a");
        assert_eq!(&link[path_column..], "/b -> /etc");
        assert!(file.starts_with("prw-r--r-- "), "{file}");
        assert!(link.starts_with("lrwxrwxrwx "), "{link}");
        let size_end = header.find("size").unwrap() + "size".len();
        assert_eq!(&file[size_end - 1..size_end], "0");
    }
}
