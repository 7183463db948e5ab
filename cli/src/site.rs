//! `basho site list`.

use basho_core::protocol::Site;

use crate::args::{SiteArgs, SiteCmd};
use crate::client::Client;
use crate::error::Error;
use crate::output::{self, Output};
use crate::workspace::{parse_list, print_raw};

/// Runs a site command.
pub async fn run(args: SiteArgs) -> Result<(), Error> {
    let client = Client::with_ca(
        &args.client.addr,
        args.client.token.clone(),
        args.client.ca_file.as_deref(),
    )?;
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
    }
    Ok(())
}
