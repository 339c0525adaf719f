ALTER TABLE strategies DROP COLUMN position;
