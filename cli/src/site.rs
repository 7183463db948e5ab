//! `basho site list`, and the sites' session keys: `basho site key|trust|forget`.

use basho_core::e2e::{fingerprint, parse_key};
use basho_core::protocol::Site;

use crate::args::{SiteArgs, SiteCmd};
use crate::error::Error;
use crate::output::{self, Output};
use crate::workspace::{parse_list, print_raw};

/// Runs a site command.
pub async fn run(args: SiteArgs) -> Result<(), Error> {
    let pins = crate::pins::Pins::user()?;
    match &args.cmd {
        SiteCmd::Trust { site, key } => {
            let key = parse_key(key).map_err(|e| Error::Usage(e.to_string()))?;
            pins.pin(site, &key)?;
            println!("pinned site {site}'s session key {}", fingerprint(&key));
            return Ok(());
        }
        SiteCmd::Forget { site } => {
            if pins.forget(site)? {
                println!("forgot site {site}'s session key");
            } else {
                println!("no session key was pinned for site {site}");
            }
            return Ok(());
        }
        SiteCmd::List | SiteCmd::Key { .. } => {}
    }
    let client = args.client.connect()?;
    match args.cmd {
        SiteCmd::List => {
            let answer = client.list_sites().await?;
            match args.client.output {
                Output::Json => print_raw(&answer.body),
                Output::Table => {
                    let sites: Vec<Site> = parse_list(&client, &answer, "sites")?;
                    print!("{}", output::sites_table(&sites));
                }
            }
        }
        SiteCmd::Key { site } => {
            let answer = client.site_session_key(&site).await?;
            let v: serde_json::Value = answer.parse(&client, "a site's session key")?;
            let key = parse_key(v["key"].as_str().unwrap_or_default())
                .map_err(|e| Error::Session(format!("site {site}'s session key: {e}")))?;
            let pinned = match pins.get(&site)? {
                None => "nothing pinned yet".to_owned(),
                Some(p) if p == key => "the same is pinned".to_owned(),
                Some(p) => format!("DIFFERENT: pinned {}", fingerprint(&p)),
            };
            match args.client.output {
                Output::Json => print_raw(&answer.body),
                Output::Table => println!(
                    "{site} {} {}\n{pinned} ({})",
                    v["key"].as_str().unwrap_or_default(),
                    fingerprint(&key),
                    pins.path().display()
                ),
            }
        }
        // Answered above, without the orchestrator.
        SiteCmd::Trust { .. } | SiteCmd::Forget { .. } => {}
    }
    Ok(())
}
