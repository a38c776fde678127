//! `cairn ls`.

use anyhow::Result;
use cairn_store::Repository;
use cairn_store::format::tree::{Node, NodeKind};

use crate::args::{GlobalArgs, LsArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

fn print_node(global: &GlobalArgs, long: bool, path: &str, node: &Node) {
    let kind = render::node_type(node);
    if global.json {
        let mut value = serde_json::json!({
            "message_type": "node", "path": path, "type": kind, "mode": node.mode & 0o7777, "size": node.size,
            "mtime": render::rfc3339(node.mtime), "uid": node.uid, "gid": node.gid,
        });
        if let NodeKind::Symlink { target } = &node.kind {
            value["target"] = String::from_utf8_lossy(target).into();
        }
        render::json_line(&value);
    } else if long {
        let link = match &node.kind {
            NodeKind::Symlink { target } => format!(" -> {}", String::from_utf8_lossy(target)),
            _ => String::new(),
        };
        outln!(
            "{} {:>5} {:>5} {:>12} {} {path}{link}",
            render::mode_string(node.mode),
            node.uid,
            node.gid,
            node.size,
            render::local_time(node.mtime)
        );
    } else {
        outln!("{path}");
    }
}

fn walk(
    repository: &Repository,
    global: &GlobalArgs,
    long: bool,
    tree: &cairn_store::Id,
    prefix: &str,
) -> Result<()> {
    for node in repository.load_tree(tree)?.nodes {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
        print_node(global, long, &path, &node);
        if let NodeKind::Directory { subtree } = &node.kind {
            walk(repository, global, long, subtree, &path)?;
        }
    }
    Ok(())
}

/// Lists the snapshot's entries recursively, below `path` if given (`latest`: the newest
/// selected snapshot that holds it).
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &LsArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    repository.sync_index()?;
    let chooser = super::Chooser::new(&repository, selection);
    let (_, snapshot) = chooser.holding(&args.snapshot, args.path.as_deref())?;
    let path = args.path.as_deref().unwrap_or("");
    match repository.find_node(&snapshot.root, path)? {
        None => walk(&repository, global, args.long, &snapshot.root, ""),
        Some(node) => {
            let shown = format!("/{}", path.trim_matches('/'));
            print_node(global, args.long, &shown, &node);
            if let NodeKind::Directory { subtree } = &node.kind {
                walk(
                    &repository,
                    global,
                    args.long,
                    subtree,
                    shown.trim_end_matches('/'),
                )?;
            }
            Ok(())
        }
    }
}
