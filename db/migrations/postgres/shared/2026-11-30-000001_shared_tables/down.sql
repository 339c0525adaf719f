DROP TABLE strategies;
DROP TABLE instruments;
