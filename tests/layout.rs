//! The layout is part of the design (ARCHITECTURE.md, "Code map"), so it is checked like
//! behaviour: no import circle between files, dependencies between the top-level folders
//! pointing one way only (down the list in [`LAYERS`]), `src/` small enough to read at a
//! glance, no file too long to hold one idea.
//!
//! Imports are read from the source text: every `crate::a::b` path (and `use crate::a::{b,
//! c}`), and `super::` paths, resolved to the file that defines the module. A file using its
//! own parent (`super::Item` in a submodule) is how Rust nests a module, not a circle, and is
//! left out. Unit tests at the end of a file (`#[cfg(test)] mod tests`) may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom up: each may use those before it, never one after
/// it (nor another of the same rank).
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("support", 1),
    ("store", 2),
    ("events", 3),
    ("recovery", 4),
    ("operations", 5),
    ("expiry", 6),
    ("live", 6),
    ("http", 7),
    ("startup", 8),
];
const MAX_TOP_LEVEL: usize = 12;
const MAX_LINES: usize = 400;

type Module = Vec<String>;

struct SourceFile {
    path: PathBuf,
    /// The code before its unit tests, comments removed.
    code: String,
    /// Lines before its unit tests.
    lines: usize,
}

fn sources() -> BTreeMap<Module, SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .expect("under src/")
                .with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            let text = std::fs::read_to_string(&path).expect("source is readable");
            let before_tests = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => &text[..at],
                None => &text[..],
            };
            let code = before_tests
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let lines = before_tests.lines().count();
            files.insert(module, SourceFile { path, code, lines });
        }
    }
    files
}

/// The `a::b::c` path that starts at `at` in `code`, and where it ends.
fn path_at(code: &str, at: usize) -> (Vec<String>, usize) {
    let mut parts = Vec::new();
    let mut rest = &code[at..];
    let mut end = at;
    loop {
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        parts.push(rest[..len].to_owned());
        end += len;
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(next) if next.starts_with(|c: char| c.is_alphanumeric() || c == '_') => {
                rest = next;
                end += 2;
            }
            _ => break,
        }
    }
    (parts, end)
}

/// The submodules a file declares (`mod x;`, `pub mod x;`), which it may name as `x::`.
fn declared_submodules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("pub ").unwrap_or(line);
            let rest = rest.strip_prefix("pub(crate) ").unwrap_or(rest);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// Every module path a file's code names: through `crate::`, `super::`, or a submodule it
/// declares.
fn named_paths(module: &Module, code: &str) -> Vec<Module> {
    let mut paths = Vec::new();
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    let mut prefixes = vec![("crate::".to_owned(), Vec::new(), false)];
    prefixes.push(("super::".to_owned(), parent, false));
    for sub in declared_submodules(code) {
        prefixes.push((format!("{sub}::"), module.clone(), true));
    }
    for (prefix, base, keep_prefix) in prefixes {
        let mut from = 0;
        while let Some(found) = code[from..].find(prefix.as_str()) {
            let at = from + found;
            let start = at + prefix.len();
            let before = code[..at].chars().last();
            from = start;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let (parts, end) = path_at(code, if keep_prefix { at } else { start });
            let mut path = base.clone();
            path.extend(parts);
            // `use crate::a::{b, c::d}`: each item of the group, one level deep.
            if let Some(group) = code[end..].strip_prefix("::{") {
                let items = &group[..group.find('}').unwrap_or(group.len())];
                for item in items.split(',') {
                    let mut item_path = path.clone();
                    item_path.extend(item.trim().split("::").map(str::to_owned));
                    paths.push(item_path);
                }
            } else {
                paths.push(path);
            }
        }
    }
    paths
}

/// The file-level import graph, without edges to a file's own ancestors.
fn graph(files: &BTreeMap<Module, SourceFile>) -> BTreeMap<Module, BTreeSet<Module>> {
    let resolve = |path: &Module| -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|candidate| files.contains_key(candidate))
    };
    files
        .iter()
        .map(|(module, file)| {
            let targets = named_paths(module, &file.code)
                .iter()
                .filter_map(resolve)
                .filter(|target| target != module && !module.starts_with(target))
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "lib.rs".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let edges = graph(&sources());
    // A path back to the start from each edge's target is a circle.
    for (from, targets) in &edges {
        for to in targets {
            let mut seen = BTreeSet::new();
            let mut stack = vec![vec![to.clone()]];
            while let Some(trail) = stack.pop() {
                let last = trail.last().expect("a trail is never empty");
                if last == from {
                    let circle: Vec<String> = std::iter::once(from)
                        .chain(trail.iter())
                        .map(name)
                        .collect();
                    panic!("import circle: {}", circle.join(" -> "));
                }
                if !seen.insert(last.clone()) {
                    continue;
                }
                for next in edges.get(last).into_iter().flatten() {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
}

#[test]
fn dependencies_between_folders_point_down_the_layers() {
    let rank = |module: &Module| {
        let top = module.first()?;
        LAYERS.iter().find(|(name, _)| name == top).map(|&(_, r)| r)
    };
    let mut upward = Vec::new();
    for (from, targets) in graph(&sources()) {
        let Some(from_rank) = rank(&from) else {
            continue;
        };
        for to in targets {
            let Some(to_rank) = rank(&to) else { continue };
            if from[0] != to[0] && to_rank >= from_rank {
                upward.push(format!("{} -> {}", name(&from), name(&to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layers (ARCHITECTURE.md): {upward:#?}"
    );
}

/// Each layer speaks its own words (ARCHITECTURE.md, "Code map"): the HTTP edge maps the
/// operations' errors and the domain's refusals, never the store's; and outside `store/` a
/// module holds the narrow handle of its role, never the whole `Store`, but for the two that
/// build it.
#[test]
fn the_edge_and_the_roles_never_reach_into_the_store() {
    let files = sources();
    let mut crossing = Vec::new();
    for (from, targets) in graph(&files) {
        if from.first().map(String::as_str) == Some("http") {
            for to in targets
                .iter()
                .filter(|to| to.first().map(String::as_str) == Some("store"))
            {
                crossing.push(format!("{} -> {}", name(&from), name(to)));
            }
        }
    }
    assert!(
        crossing.is_empty(),
        "http/ imports from store/: {crossing:#?}"
    );

    const BUILDERS: [&str; 2] = ["startup", "recovery::audit"];
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let holders: Vec<String> = files
        .iter()
        .filter(|(module, _)| module.first().map(String::as_str) != Some("store"))
        .filter(|(module, _)| !BUILDERS.contains(&name(module).as_str()))
        .filter(|(_, file)| {
            // The type, not a `Store(_)` variant nor another crate's `kv::Store`.
            file.code.match_indices("Store").any(|(at, word)| {
                let (head, tail) = (&file.code[..at], &file.code[at + word.len()..]);
                let whole = !head.chars().next_back().is_some_and(is_ident)
                    && !tail.chars().next().is_some_and(is_ident);
                let ours = !head.ends_with("::") || head.ends_with("store::");
                whole && ours && !tail.starts_with('(')
            })
        })
        .map(|(module, _)| name(module))
        .collect();
    assert!(
        holders.is_empty(),
        "modules naming the whole Store: {holders:?}"
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let files = sources();
    let tops: BTreeSet<&str> = files
        .keys()
        .filter_map(|module| module.first().map(String::as_str))
        .collect();
    for top in tops {
        assert!(
            LAYERS.iter().any(|(name, _)| *name == top),
            "src/{top} has no place in LAYERS"
        );
    }
}

#[test]
fn the_source_tree_stays_small_enough_to_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let entries = std::fs::read_dir(&root).expect("src/ is readable").count();
    assert!(
        entries <= MAX_TOP_LEVEL,
        "src/ holds {entries} entries, more than {MAX_TOP_LEVEL}: group them by concept"
    );
    let long: Vec<String> = sources()
        .values()
        .filter(|file| file.lines > MAX_LINES)
        .map(|file| format!("{} ({} lines)", file.path.display(), file.lines))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines before their unit tests: {long:?}"
    );
}

#[test]
fn the_reader_sees_what_it_must() {
    // The checks above are only as good as the parsing: a planted circle must be found.
    let files: BTreeMap<Module, SourceFile> = [
        (vec!["a".into()], "use crate::b::{Thing, other::More};"),
        (vec!["b".into()], "mod other;\nfn f() { crate::a::call() }"),
        (vec!["b".into(), "other".into()], "use super::Thing;"),
        (vec!["c".into()], "pub mod d;\nuse d::Item;"),
        (vec!["c".into(), "d".into()], "use crate::a::Thing;"),
    ]
    .into_iter()
    .map(|(module, code)| {
        let path = PathBuf::from(format!("{}.rs", name(&module)));
        (
            module,
            SourceFile {
                path,
                code: code.into(),
                lines: 1,
            },
        )
    })
    .collect();
    let edges = graph(&files);
    assert_eq!(
        edges[&vec!["a".to_owned()]],
        BTreeSet::from([
            vec!["b".to_owned()],
            vec!["b".to_owned(), "other".to_owned()]
        ])
    );
    assert_eq!(
        edges[&vec!["b".to_owned()]],
        BTreeSet::from([vec!["a".to_owned()]])
    );
    assert!(
        edges[&vec!["b".to_owned(), "other".to_owned()]].is_empty(),
        "a file's use of its own parent is no edge"
    );
    assert_eq!(
        edges[&vec!["c".to_owned()]],
        BTreeSet::from([vec!["c".to_owned(), "d".to_owned()]]),
        "a parent's use of a submodule it declares is an edge"
    );
}
