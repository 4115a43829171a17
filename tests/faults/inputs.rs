//! Bad input, as data: each case runs the probe and must exit with its code, say what it
//! says, stay short, and store no run.

use crate::home::{assert_clean, json, Home};

/// One bad command: its arguments, an optional config file (name and content, `{file}` in
/// the arguments stands for its path), the exit code and a phrase the error must hold.
struct Case {
    name: &'static str,
    args: Vec<String>,
    file: Option<(&'static str, FileContent)>,
    code: i32,
    says: &'static str,
}

enum FileContent {
    Text(String),
    Link(&'static str),
}

fn args(text: &[&str]) -> Vec<String> {
    text.iter().map(|s| s.to_string()).collect()
}

fn config(name: &'static str, text: String) -> Option<(&'static str, FileContent)> {
    Some((name, FileContent::Text(text)))
}

fn cases() -> Vec<Case> {
    let materialize_with_config = args(&["asset", "materialize", "--all", "--config", "{file}"]);
    vec![
        Case {
            name: "unknown asset",
            args: args(&["asset", "materialize", "--select", "frist"]),
            file: None,
            code: 2,
            says: "did you mean `first`?",
        },
        Case {
            name: "10 kB selection of one unknown name",
            args: vec![
                "asset".into(),
                "materialize".into(),
                "--select".into(),
                "x,".repeat(5120),
            ],
            file: None,
            code: 2,
            says: "unknown asset `x`",
        },
        Case {
            name: "thousands of distinct unknown names",
            args: vec![
                "asset".into(),
                "materialize".into(),
                "--select".into(),
                (0..1000)
                    .map(|i| format!("n{i}_{} ", "z".repeat(100)))
                    .collect(),
            ],
            file: None,
            code: 2,
            says: "and 990 more",
        },
        Case {
            name: "a zero depth",
            args: args(&["asset", "materialize", "--select", "first+0"]),
            file: None,
            code: 2,
            says: "bad depth `0`",
        },
        Case {
            name: "a selection of nothing",
            args: args(&["asset", "materialize", "--select", " , "]),
            file: None,
            code: 2,
            says: "selects nothing",
        },
        Case {
            name: "control characters and unicode in a selection",
            args: args(&["asset", "materialize", "--select", "é\u{7}\u{202e}x"]),
            file: None,
            code: 2,
            says: "unknown asset",
        },
        Case {
            name: "a 10 MB config value",
            args: materialize_with_config.clone(),
            file: config(
                "huge.yaml",
                format!(
                    "assets:\n  first:\n    value: \"{}\"\n",
                    "v".repeat(10 << 20)
                ),
            ),
            code: 2,
            says: "larger than 1 MiB",
        },
        Case {
            name: "a 500 kB config value of the wrong type",
            args: materialize_with_config.clone(),
            file: config(
                "wrong.yaml",
                format!(
                    "assets:\n  first:\n    value: \"{}\"\n",
                    "v".repeat(500 << 10)
                ),
            ),
            code: 2,
            says: "invalid config for asset `first` at `value`",
        },
        Case {
            name: "a config file that never ends",
            args: materialize_with_config.clone(),
            file: Some(("zero.yaml", FileContent::Link("/dev/zero"))),
            code: 2,
            says: "larger than 1 MiB",
        },
        Case {
            name: "200 kB of nested YAML",
            args: materialize_with_config.clone(),
            file: config(
                "deep.yaml",
                format!(
                    "assets:\n  first: {}{}\n",
                    "[".repeat(100_000),
                    "]".repeat(100_000)
                ),
            ),
            code: 2,
            says: "nests deeper than 64 levels",
        },
        Case {
            name: "an unknown config field",
            args: materialize_with_config.clone(),
            file: config("typo.yaml", "assets:\n  first:\n    valeu: 3\n".into()),
            code: 2,
            says: "unknown field `valeu`",
        },
        Case {
            name: "config for an unknown asset",
            args: materialize_with_config.clone(),
            file: config("unknown.yaml", "assets:\n  frist:\n    value: 3\n".into()),
            code: 2,
            says: "did you mean `first`?",
        },
        Case {
            name: "a number beyond its type",
            args: materialize_with_config.clone(),
            file: config(
                "big.json",
                r#"{"assets": {"first": {"value": 1e40}}}"#.into(),
            ),
            code: 2,
            says: "invalid config for asset `first` at `value`",
        },
        Case {
            name: "a retry policy out of range",
            args: materialize_with_config.clone(),
            file: config(
                "retries.yaml",
                "retries:\n  first:\n    max_retries: 4294967295\n".into(),
            ),
            code: 2,
            says: "more than the 1000 allowed",
        },
        Case {
            name: "a retry delay out of range",
            args: materialize_with_config.clone(),
            file: config(
                "delay.toml",
                "[retries.first]\nmax_retries = 1\ndelay = \"99999h\"\n".into(),
            ),
            code: 2,
            says: "longer than",
        },
        Case {
            name: "a config file that is missing",
            args: args(&[
                "asset",
                "materialize",
                "--all",
                "--config",
                "/nonexistent/run.yaml",
            ]),
            file: None,
            code: 2,
            says: "cannot read it",
        },
        Case {
            name: "a config file of an unknown format",
            args: args(&["asset", "materialize", "--all", "--config", "/dev/zero"]),
            file: None,
            code: 2,
            says: "unknown format",
        },
        Case {
            name: "a retention age in the far future",
            args: args(&["storage", "prune", "--max-age-days", "213503982334602"]),
            file: None,
            code: 2,
            says: "not in 0..=36500",
        },
        Case {
            name: "a negative run count",
            args: args(&["storage", "prune", "--max-runs=-1"]),
            file: None,
            code: 2,
            says: "--max-runs",
        },
        Case {
            name: "a list of no runs",
            args: args(&["run", "list", "--limit", "0"]),
            file: None,
            code: 2,
            says: "not in 1..=100000",
        },
        Case {
            name: "an unknown run",
            args: args(&["run", "show", "no-such-run"]),
            file: None,
            code: 2,
            says: "run `no-such-run` not found",
        },
        Case {
            name: "a 10 kB run id",
            args: vec![
                "run".into(),
                "reexecute".into(),
                "r".repeat(10_240),
                "--from-failure".into(),
            ],
            file: None,
            code: 2,
            says: "not found",
        },
    ]
}

#[test]
fn bad_input_gets_a_clear_short_error_and_stores_nothing() {
    let home = Home::new("inputs");
    assert!(home
        .run(&["asset", "materialize", "--all"])
        .status
        .success());
    let runs = || {
        json(&home.run(&["run", "list", "--json"]))
            .as_array()
            .unwrap()
            .len()
    };
    let before = runs();
    for case in cases() {
        let mut args = case.args.clone();
        if let Some((name, content)) = &case.file {
            let path = home.path().join(name);
            match content {
                FileContent::Text(text) => std::fs::write(&path, text).unwrap(),
                FileContent::Link(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            }
            for arg in &mut args {
                *arg = arg.replace("{file}", path.to_str().unwrap());
            }
        }
        let output = home
            .probe(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .unwrap();
        assert_clean(case.name, &output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(case.code),
            "{}: {stderr}",
            case.name
        );
        assert!(
            stderr.contains(case.says),
            "{}: the error does not say {:?}: {}",
            case.name,
            case.says,
            crate::home::head(&stderr)
        );
    }
    assert_eq!(runs(), before, "no bad command stored a run");
}
