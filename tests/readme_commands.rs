//! README's commands must work as written: the `cargo run --release -- …` lines of its command
//! blocks run here through the test build of the same binary (same arguments, same working
//! folder), and the test command it names is the one `.ci/run` runs.

use std::path::Path;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The shell commands of README's ```sh blocks, continuation lines joined, comments dropped.
fn sh_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = t == "```sh";
            continue;
        }
        if !in_block || t.starts_with('#') || t.is_empty() {
            continue;
        }
        let code = t.split(" # ").next().unwrap().trim_end();
        if let Some(part) = code.strip_suffix('\\') {
            cur.push_str(part.trim_end());
            cur.push(' ');
        } else {
            cur.push_str(code);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

#[test]
fn readme_cargo_run_commands_work_as_written() {
    let cmds: Vec<String> = sh_commands(&readme()).into_iter().filter(|c| c.starts_with("cargo run --release -- ")).collect();
    assert!(!cmds.is_empty(), "README has no `cargo run --release --` command");
    for c in &cmds {
        let args: Vec<&str> = c["cargo run --release -- ".len()..].split_whitespace().collect();
        let out = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "README command failed: {c}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        if args.first() == Some(&"forward") {
            assert!(stdout.contains("PASS"), "README's forward command printed no PASS: {stdout}");
        }
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "backend probing printed error-looking lines: {stderr}");
    }
}

/// README's `DIFFVSR_NO_F16=1` turns f16 storage off as `--no-f16` does: asking for f16 then
/// fails, naming both switches.
#[test]
fn no_f16_from_the_environment_is_the_flag() {
    let forward = |flag: Option<&str>, env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"));
        c.args(["forward", "--model", "te3dvae-decoder", "--config", "tests/data/te3dvae/config.json", "--random-weights", "1", "--random-inputs", "1x8x8", "--dtype", "f16"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("DIFFVSR_NO_F16");
        c.args(flag);
        if let Some(v) = env {
            c.env("DIFFVSR_NO_F16", v);
        }
        c.output().unwrap()
    };
    for (flag, env) in [(Some("--no-f16"), None), (None, Some("1"))] {
        let o = forward(flag, env);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flag:?} {env:?}: f16 ran with f16 turned off");
        assert!(err.contains("--no-f16 or DIFFVSR_NO_F16"), "{flag:?} {env:?}: {err}");
    }
}

/// The auto|on|off switches that are also environment variables take the flag's values there
/// without a warning (DIFFVSR_F16_OPERANDS=auto was also read as an on/off switch and said
/// "ignored").
#[test]
fn auto_on_off_variables_take_the_flags_values() {
    for var in ["DIFFVSR_F16_OPERANDS", "DIFFVSR_TUNE", "DIFFVSR_NORM_INTO_CONV"] {
        for v in ["auto", "on", "off"] {
            let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
                .args(["forward", "--model", "te3dvae-decoder", "--config", "tests/data/te3dvae/config.json", "--random-weights", "1", "--random-inputs", "1x8x8", "--plan-only"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env(var, v)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{var}={v}: {err}");
            assert!(!err.contains(var), "{var}={v} warned: {err}");
        }
    }
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let cmds = sh_commands(&readme());
    assert!(cmds.iter().any(|c| c == "cargo test"), "README's test command is not `cargo test`: {cmds:?}");
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "cargo test"), ".ci/run does not run README's test command");
}
