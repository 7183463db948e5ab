-- What a site may ever give basho (its configured compute times `max_share`), and why what it
-- gives now (`capacity`) is below that, from the agent's live capacity reports.
ALTER TABLE sites ADD COLUMN ceiling TEXT;
ALTER TABLE sites ADD COLUMN capacity_note TEXT;
