select
    countries.country_code,
    countries.country_name,
    regions.country_count as countries_in_region
from {{ ref('stg_countries') }} as countries
inner join {{ ref('int_regions') }} as regions on countries.region = regions.region
where countries.region = 'europe'
