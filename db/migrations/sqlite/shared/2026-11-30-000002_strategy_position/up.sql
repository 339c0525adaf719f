-- The place of each strategy in the imported set, so a daemon starts them in file order.
ALTER TABLE strategies ADD COLUMN position integer NOT NULL DEFAULT 0;
