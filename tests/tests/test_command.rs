//! The README's one test command is what CI runs, and it brings its own system packages:
//! `.ci/run` only runs it (no apt work of its own), and `run-all.sh` starts with
//! `install-deps.sh`, whose check passes on this machine without installing anything.

use std::process::Command;

use dict_tests::repo_dir;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The first line of the first ```sh block of the README's "Run the tests" section.
fn readme_test_command() -> String {
    let readme = read("README.md");
    let section = readme
        .split("\n## Run the tests\n")
        .nth(1)
        .expect("README has a Run the tests section");
    let block = section.split("```sh\n").nth(1).expect("a ```sh block");
    block.lines().next().unwrap().trim().to_string()
}

#[test]
fn ci_runs_the_readme_command_which_installs_what_it_needs() {
    let command = readme_test_command();
    assert_eq!(command, "bash tests/scripts/run-all.sh");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == format!("exec {command}")),
        ".ci/run must run the README's command:\n{ci}"
    );
    assert!(
        !ci.contains("apt-get"),
        ".ci/run must leave the packages to the test command (no double apt work)"
    );
    let run_all = read("tests/scripts/run-all.sh");
    let first_step = run_all
        .lines()
        .find(|l| l.contains("step ") && l.contains("if !"))
        .unwrap();
    assert!(
        first_step.contains("install-deps.sh"),
        "first step: {first_step}"
    );

    // Everything is installed here: the check passes and apt-get is not needed.
    let out = Command::new("bash")
        .arg(repo_dir().join("tests/scripts/install-deps.sh"))
        .env("DICT_TEST_NO_INSTALL", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("packages installed"), "{stdout}");
    assert!(!stdout.contains("apt-get"), "{stdout}");
}
