//! `alerter scan`: runs log patterns over files, like `fail2ban-regex` or
//! `grep -c`: to try patterns before putting them in a `log` source, and
//! to measure the matcher against grep (bench/log-scan.sh).

use std::path::PathBuf;

use alerter_plugin_log::matcher::{self, Matcher};
use anyhow::{Context, bail};
use clap::Args;

/// `alerter scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A pattern (repeat for several; the first that matches a line wins).
    #[arg(short = 'e', long = "regex", value_name = "REGEX")]
    patterns: Vec<String>,
    /// Patterns from a file, one per line.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pattern_file: Option<PathBuf>,
    /// Lines matching this are skipped (repeatable).
    #[arg(long, value_name = "REGEX")]
    ignore: Vec<String>,
    /// Print only the number of matching lines, like `grep -c`.
    #[arg(short = 'c', long)]
    count: bool,
    /// How many example lines to show per pattern.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// The files to scan (`-` for standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn scan(a: ScanArgs) -> anyhow::Result<bool> {
    let mut patterns = a.patterns.clone();
    if let Some(f) = &a.pattern_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        patterns.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if patterns.is_empty() {
        bail!("give patterns with -e REGEX or -f FILE");
    }
    let pats: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let ignore: Vec<&str> = a.ignore.iter().map(String::as_str).collect();
    let m = Matcher::new(&pats, &ignore).map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .map(|e| match pats.get(e.index) {
                Some(p) => format!("pattern {} `{p}`: {}", e.index + 1, e.message),
                None => format!("ignore pattern {}: {}", e.index - pats.len() + 1, e.message),
            })
            .collect();
        anyhow::anyhow!("{}", list.join("\n"))
    })?;
    let mut counts = vec![0u64; pats.len()];
    let mut examples: Vec<Vec<String>> = vec![Vec::new(); pats.len()];
    let started = std::time::Instant::now();
    let mut bytes = 0;
    for f in &a.files {
        let hit = |line: &[u8], p: usize| {
            counts[p] += 1;
            if !a.count && examples[p].len() < a.examples {
                examples[p].push(String::from_utf8_lossy(line).into_owned());
            }
        };
        bytes += if f.as_os_str() == "-" {
            matcher::scan_reader(&m, std::io::stdin().lock(), hit)
        } else {
            let file = std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
            matcher::scan_reader(&m, file, hit)
        }
        .with_context(|| format!("cannot read {}", f.display()))?;
    }
    let took = started.elapsed();
    let total: u64 = counts.iter().sum();
    if a.count {
        println!("{total}");
        return Ok(total > 0);
    }
    for (i, p) in pats.iter().enumerate() {
        println!("{:>8}  {p}", counts[i]);
        for ex in &examples[i] {
            let caps = m.captures(i, ex.as_bytes());
            let caps: Vec<String> = caps.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "          | {ex}{}",
                if caps.is_empty() { String::new() } else { format!("  [{}]", caps.join(", ")) }
            );
        }
    }
    println!(
        "{total} matching lines; {:.1} MB in {:.3} s ({:.0} MB/s)",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
    );
    Ok(total > 0)
}
