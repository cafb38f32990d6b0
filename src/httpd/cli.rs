//! `registryfs httpd-config`: the command line.

use super::options::{HttpdOptions, DEFAULT_LISTEN};
use super::{apache, nginx, njs_module};
use crate::error::{Error, Result};

/// Which configuration `registryfs httpd-config` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// nginx: http{}-level maps and a server{} block (--full: a whole nginx.conf)
    Nginx,
    /// Apache 2.4: a VirtualHost (--full: a whole apache2.conf)
    Apache,
    /// The njs module that `nginx --njs FILE` loads (nginx < 1.23: repeated Accept lines)
    Njs,
}

/// `registryfs httpd-config`: print a web server configuration serving the Registry v2
/// pull API from a mount.
#[derive(Clone, Debug, clap::Args)]
pub struct HttpdConfigArgs {
    /// The server to configure
    #[arg(value_enum)]
    pub server: Server,
    /// The mount point to serve (absolute; not for njs)
    #[arg(long, value_name = "MOUNTPOINT")]
    pub root: Option<String>,
    /// Address and port to listen on
    #[arg(long, value_name = "ADDRESS:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Print a whole configuration file, not only the server part
    #[arg(long)]
    pub full: bool,
    /// nginx: read every Accept line through this njs module file (see `httpd-config njs`)
    #[arg(long, value_name = "FILE")]
    pub njs: Option<String>,
}

impl HttpdConfigArgs {
    /// The configuration text.
    pub fn render(&self) -> Result<String> {
        if self.server == Server::Njs {
            return Ok(njs_module());
        }
        let opts = HttpdOptions {
            root: self
                .root
                .clone()
                .ok_or_else(|| Error::Usage("--root MOUNTPOINT is required".into()))?,
            listen: self.listen.clone(),
            full: self.full,
            njs: self.njs.clone(),
        };
        match self.server {
            Server::Nginx => nginx(&opts),
            Server::Apache => {
                if opts.njs.is_some() {
                    return Err(Error::Usage(
                        "--njs is for nginx (Apache joins repeated Accept lines itself)".into(),
                    ));
                }
                apache(&opts)
            }
            Server::Njs => Ok(njs_module()),
        }
    }
}
