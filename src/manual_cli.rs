//! `alerter man` and `alerter completions`: the manual pages and shell
//! completions, generated from the command-line definitions themselves
//! (clap_mangen, clap_complete), so they can never disagree with `--help`.
//! The Debian package ships their output; these commands serve installs
//! without it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

/// `alerter man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (alerter(1) and one per command, such as
    /// alerter-run(1)) into this directory instead of printing alerter(1).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `alerter completions`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: Shell,
}

/// The sections alerter(1) has beyond what the definitions say: where
/// things are, the environment, signals, exit codes. In roff.
const EXTRA: &str = r#".SH FILES
.TP
\fI/etc/alerter/alerter.yaml\fR
The configuration, as the Debian package installs it (without \fB\-c\fR, \fBalerter run\fR uses the one built into the binary). \fBalerter check \-c FILE\fR checks it.
.TP
\fI/var/lib/alerter/\fR
The state: alerts, the outbox, history (\fB$STATE_DIRECTORY\fR under systemd; \fI~/.local/state/alerter\fR for other users).
.TP
\fI/run/alerter/api.sock\fR
The control API's socket (\fB$RUNTIME_DIRECTORY\fR under systemd), used by \fBalerter status\fR, \fBack\fR, \fBsilence\fR, \fBnotice\fR and \fBreload\fR.
.TP
\fI/usr/lib/systemd/system/alerter.service\fR, \fIalerter\-listen.service\fR
The daemon and the workstation receiver as system services.
.SH ENVIRONMENT
.TP
\fBALERTER_CONFIG\fR
The configuration file, as \fB\-c\fR.
.TP
\fBALERTER_LOG\fR
The log filter, as \fB\-\-log\fR.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for a \fBType=notify\fR service: the daemon reports READY, RELOADING and STOPPING, and pings the watchdog from its engine loop.
.TP
\fBJOURNAL_STREAM\fR
Set by systemd when standard error goes to the journal: log lines then carry the journal's priority prefix and no time of their own.
.TP
\fBSTATE_DIRECTORY\fR, \fBRUNTIME_DIRECTORY\fR, \fBCREDENTIALS_DIRECTORY\fR
Set by systemd's \fBStateDirectory=\fR, \fBRuntimeDirectory=\fR and \fBLoadCredential=\fR.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration; a broken one is refused and the running one kept.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Shut down cleanly, delivering what is queued for up to \fB\-\-shutdown\-grace\fR seconds.
.SH "EXIT STATUS"
0 on success; 1 on failure; 78 (EX_CONFIG) when the configuration has errors.
.SH "SEE ALSO"
\fBalerter\-run\fR(1), \fBalerter\-check\fR(1), \fBalerter\-listen\fR(1), \fBalerter\-send\fR(1), \fBsystemctl\fR(1), \fBjournalctl\fR(1)
.PP
The documentation in \fI/usr/share/doc/alerter/\fR.
"#;

fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("alerter {}", env!("CARGO_PKG_VERSION"))).manual("alerter manual")
}

/// Renders alerter(1), with the extra sections.
fn render_main(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    page(cmd).render(out)?;
    out.write_all(EXTRA.as_bytes())
}

/// Writes alerter(1) and a page per visible command (nested ones too, as
/// `alerter-silence-add.1`) into `dir`.
fn write_all(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let mut stack: Vec<clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    while let Some(sub) = stack.pop() {
        stack.extend(sub.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        let path = page(sub).generate_to(dir).with_context(|| format!("cannot write into {}", dir.display()))?;
        written.push(path);
    }
    let main = dir.join("alerter.1");
    let mut f = std::fs::File::create(&main).with_context(|| format!("cannot write {}", main.display()))?;
    render_main(cmd, &mut f).with_context(|| format!("cannot write {}", main.display()))?;
    written.push(main);
    written.sort();
    Ok(written)
}

pub fn man(cmd: clap::Command, args: ManArgs) -> anyhow::Result<()> {
    match args.dir {
        Some(dir) => {
            for path in write_all(cmd, &dir)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        None => {
            let mut out = std::io::stdout().lock();
            render_main(cmd, &mut out).context("cannot write the page")?;
            out.flush().context("cannot write the page")
        }
    }
}

pub fn completions(mut cmd: clap::Command, args: CompletionArgs) -> anyhow::Result<()> {
    // Rendered first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "alerter", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script).and_then(|()| out.flush()).context("cannot write the completions")
}
